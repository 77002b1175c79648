{{/*
The Ray Serve config of the gateway: the mirror of serving/app.py:serve_config, held equal to it by
tests/helm (the router's user_config.gateway is compared after serving.config.parse_config, so
it carries the gateway values as given and the router fills in the defaults).

One application per variant (`variant-<key>`), whose args are what its replicas load, plus the
router application `slimgate` on route prefix /. Defaults of fields a values file leaves out come
from files/gateway-defaults.yaml, generated from serving.config.
*/}}
{{- define "slimgate.serveConfig" -}}
{{- $d := include "slimgate.gatewayDefaults" . | fromYaml -}}
{{- $gw := include "slimgate.gateway" . | fromYaml -}}
{{- $gateway := deepCopy .Values.gateway -}}
{{- if kindIs "map" $gateway.admin -}}
{{- $_ := unset $gateway.admin "token" -}}
{{- end -}}
{{- $r := $gw.router -}}
{{- $router := dict
      "name" "Router"
      "num_replicas" $r.replicas
      "max_ongoing_requests" 256
      "ray_actor_options" (dict "num_cpus" $r.num_cpus)
      "user_config" (dict "gateway" $gateway) -}}
{{- $apps := list (dict
      "name" "slimgate"
      "route_prefix" "/"
      "import_path" "serving.app:router_app"
      "args" (dict)
      "deployments" (list $router)) -}}
{{- range $key, $spec := $gw.variants -}}
{{- $v := mustMergeOverwrite (deepCopy $d.variant) (deepCopy $spec) -}}
{{- $actor := dict "num_cpus" $v.resources.num_cpus -}}
{{- if not (kindIs "invalid" $v.resources.num_gpus) -}}
{{- $_ := set $actor "num_gpus" $v.resources.num_gpus -}}
{{- end -}}
{{- $deployment := dict
      "name" "Variant"
      "max_ongoing_requests" (max 32 (mul 2 $v.batching.max_batch_size))
      "ray_actor_options" $actor
      "user_config" (dict "batching" $v.batching "faults" $v.faults)
      "health_check_timeout_s" 60
      "graceful_shutdown_timeout_s" 30 -}}
{{- if kindIs "map" $v.autoscaling -}}
{{- $_ := set $deployment "autoscaling_config" (mustMergeOverwrite (deepCopy $d.autoscaling) $v.autoscaling) -}}
{{- else -}}
{{- $_ := set $deployment "num_replicas" ($v.replicas | default 1) -}}
{{- end -}}
{{- $args := dict "key" $key "ref" $v.ref "registry" $gw.registry "threads" $v.threads "backend" $v.backend -}}
{{- $apps = append $apps (dict
      "name" (printf "variant-%s" $key)
      "route_prefix" nil
      "import_path" "serving.app:variant_app"
      "args" $args
      "deployments" (list $deployment)) -}}
{{- end -}}
{{- toYaml (dict
      "proxy_location" "HeadOnly"
      "http_options" (dict
        "host" $gw.http.host
        "port" $gw.http.port
        "request_timeout_s" (addf $gw.limits.request_timeout_s 5))
      "applications" $apps) -}}
{{- end -}}
