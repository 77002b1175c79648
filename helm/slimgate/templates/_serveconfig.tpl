{{/*
The Ray Serve config of the gateway: the mirror of serving/translation.py:serve_config, held equal to it by
tests/helm (the router's user_config.gateway is compared after serving.config.parse_config, so
it carries the gateway values as given and the router fills in the defaults).

The router application `slimgate` on route prefix /, which also loads every variant placed in the
router (placement: router, the default) from its user_config, plus one application per variant
with `placement: deployment` (`variant-<key>`), whose args are what its replicas load. Defaults of
fields a values file leaves out come from files/gateway-defaults.yaml, generated from
serving.config; the router's constants (ROUTER_ONGOING_HEADROOM, GRPC_SERVICER) are serving/translation.py's.
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
      "max_ongoing_requests" (add (int $gw.admission.max_in_flight) 32)
      "ray_actor_options" (dict "num_cpus" $r.num_cpus)
      "user_config" (dict "gateway" $gateway)
      "logging_config" (dict "enable_access_log" false)
      "health_check_timeout_s" 60
      "graceful_shutdown_timeout_s" 30 -}}
{{- $apps := list (dict
      "name" "slimgate"
      "route_prefix" "/"
      "import_path" "serving.ray_apps:router_app"
      "args" (dict)
      "deployments" (list $router)) -}}
{{- range $key, $spec := $gw.variants -}}
{{- $v := mustMergeOverwrite (deepCopy $d.variant) (deepCopy $spec) -}}
{{- /* A variant placed in the router has no application of its own. */ -}}
{{- if eq $v.placement "deployment" -}}
{{- /* args and user_config take the fields files/gateway-defaults.yaml lists (their change-cost tags). */ -}}
{{- $live := dict -}}
{{- range $f := $d.variant_app.user_config -}}
{{- $_ := set $live $f (index $v $f) -}}
{{- end -}}
{{- $args := dict "key" $key "registry" $gw.registry -}}
{{- range $f := $d.variant_app.args -}}
{{- $_ := set $args $f (index $v $f) -}}
{{- end -}}
{{- $actor := dict "num_cpus" $v.resources.num_cpus -}}
{{- if not (kindIs "invalid" $v.resources.num_gpus) -}}
{{- $_ := set $actor "num_gpus" $v.resources.num_gpus -}}
{{- end -}}
{{- $deployment := dict
      "name" "Variant"
      "max_ongoing_requests" (max 32 (mul 2 $v.batching.max_batch_size))
      "ray_actor_options" $actor
      "user_config" $live
      "health_check_timeout_s" 60
      "graceful_shutdown_timeout_s" 30 -}}
{{- if not (kindIs "invalid" $v.max_queued_requests) -}}
{{- $_ := set $deployment "max_queued_requests" $v.max_queued_requests -}}
{{- end -}}
{{- if kindIs "map" $v.autoscaling -}}
{{- $_ := set $deployment "autoscaling_config" (mustMergeOverwrite (deepCopy $d.autoscaling) $v.autoscaling) -}}
{{- else -}}
{{- $_ := set $deployment "num_replicas" ($v.replicas | default 1) -}}
{{- end -}}
{{- $apps = append $apps (dict
      "name" (printf "variant-%s" $key)
      "route_prefix" nil
      "import_path" "serving.ray_apps:variant_app"
      "args" $args
      "deployments" (list $deployment)) -}}
{{- end -}}
{{- end -}}
{{- $out := dict
      "proxy_location" "HeadOnly"
      "http_options" (dict
        "host" $gw.http.host
        "port" $gw.http.port
        "request_timeout_s" (addf $gw.limits.request_timeout_s 5)
        "keep_alive_timeout_s" $gw.http.idle_timeout_s)
      "applications" $apps -}}
{{- if not (kindIs "invalid" $gw.http.grpc_port) -}}
{{- /* The inference protocol's gRPC service, answered by the router's methods of the same names. */ -}}
{{- $_ := set $out "grpc_options" (dict "port" $gw.http.grpc_port "grpc_servicer_functions" (list "serving.oip_grpc.add_servicer")) -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}
