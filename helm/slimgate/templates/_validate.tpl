{{/*
What values.schema.json cannot say. The first group mirrors the cross-field rules of
serving/config.py (same wording, field paths prefixed with `gateway.`), so that helm refuses a
gateway config the router would refuse; tests/helm holds each to parse_config. The second group is
about the chart itself (placement on GPU workers, the admin token, listening addresses and ports,
Ray's authentication, the NetworkPolicy's peers). Every problem is reported at once.
*/}}
{{- define "slimgate.validate" -}}
{{- $gw := .Values.gateway -}}
{{- $d := include "slimgate.gatewayDefaults" . | fromYaml -}}
{{- $problems := list -}}
{{- $configured := keys $gw.variants | sortAlpha -}}
{{- $unknown := printf "is not a configured variant (configured: %s)" (join ", " $configured) -}}
{{- $routing := $gw.routing -}}
{{- $stable := $routing.stable -}}
{{- $weights := dict $stable 100 -}}
{{- if hasKey $routing "weights" -}}
{{- $weights = $routing.weights -}}
{{- end -}}
{{- $total := 0 -}}
{{- range $key, $w := $weights -}}
{{- $total = add $total $w -}}
{{- end -}}
{{- if ne (int $total) 100 -}}
{{- $problems = append $problems (printf "gateway.routing.weights: must sum to 100, got %d (Helm merges your values over the chart's: set a default variant you do not want to null)" (int $total)) -}}
{{- end -}}
{{- if not (has $stable $configured) -}}
{{- $problems = append $problems (printf "gateway.routing.stable: '%s' %s" $stable $unknown) -}}
{{- else if le (int (get $weights $stable | default 0)) 0 -}}
{{- $problems = append $problems (printf "gateway.routing.weights: the stable variant '%s' must carry traffic (weight > 0), got %d" $stable (int (get $weights $stable | default 0))) -}}
{{- end -}}
{{- range $key := keys $weights | sortAlpha -}}
{{- if not (has $key $configured) -}}
{{- $problems = append $problems (printf "gateway.routing.weights.%s: '%s' %s" $key $key $unknown) -}}
{{- end -}}
{{- end -}}
{{- $shadow := dict -}}
{{- if kindIs "map" $gw.shadow -}}
{{- $shadow = $gw.shadow -}}
{{- end -}}
{{- range $key := $shadow.variants | default list -}}
{{- if not (has $key $configured) -}}
{{- $problems = append $problems (printf "gateway.shadow.variants: '%s' %s" $key $unknown) -}}
{{- else if eq $key $stable -}}
{{- $problems = append $problems (printf "gateway.shadow.variants: '%s' is the stable variant; it cannot shadow itself" $key) -}}
{{- end -}}
{{- end -}}
{{- range $key, $spec := $gw.variants -}}
{{- $where := printf "gateway.variants.%s" $key -}}
{{- $v := mustMergeOverwrite (deepCopy $d.variant) (deepCopy $spec) -}}
{{- $inRouter := eq $v.placement "router" -}}
{{- $replicas := not (kindIs "invalid" $spec.replicas) -}}
{{- $autoscaling := kindIs "map" $spec.autoscaling -}}
{{- if and $replicas $autoscaling -}}
{{- $problems = append $problems (printf "%s.replicas: set either replicas or autoscaling, not both" $where) -}}
{{- else if $inRouter -}}
{{- /* Compared with the defaults, as serving.config does: a dumped config (defaults filled in) is fine. */ -}}
{{- $why := "only a variant with placement: deployment has replicas of its own; a variant placed in the router runs in every router replica (router.replicas, router.num_cpus)" -}}
{{- $resources := or (ne (float64 $v.resources.num_cpus) (float64 $d.variant.resources.num_cpus)) (not (kindIs "invalid" $v.resources.num_gpus)) -}}
{{- range $field, $set := dict "replicas" $replicas "autoscaling" $autoscaling "resources" $resources "max_queued_requests" (not (kindIs "invalid" $v.max_queued_requests)) -}}
{{- if $set -}}
{{- $problems = append $problems (printf "%s.%s: %s" $where $field $why) -}}
{{- end -}}
{{- end -}}
{{- if eq ($v.backend | default "") "tensorrt" -}}
{{- $problems = append $problems (printf "%s.placement: a TensorRT variant needs a GPU: use placement: deployment" $where) -}}
{{- end -}}
{{- if eq ($v.device | default "") "cuda" -}}
{{- $problems = append $problems (printf "%s.placement: a variant on device cuda needs a GPU: use placement: deployment" $where) -}}
{{- end -}}
{{- end -}}
{{- if $autoscaling -}}
{{- $min := int ($spec.autoscaling.min_replicas | default 1) -}}
{{- if hasKey $spec.autoscaling "min_replicas" -}}
{{- $min = int $spec.autoscaling.min_replicas -}}
{{- end -}}
{{- $max := int ($spec.autoscaling.max_replicas | default 2) -}}
{{- if lt $max $min -}}
{{- $problems = append $problems (printf "%s.autoscaling.max_replicas: must be >= min_replicas (%d), got %d" $where $min $max) -}}
{{- end -}}
{{- end -}}
{{- $gpus := 0.0 -}}
{{- if and (kindIs "map" $spec.resources) (not (kindIs "invalid" $spec.resources.num_gpus)) -}}
{{- $gpus = float64 $spec.resources.num_gpus -}}
{{- end -}}
{{- if and (not $inRouter) (eq ($spec.backend | default "") "tensorrt") (le $gpus 0.0) -}}
{{- $problems = append $problems (printf "%s.resources.num_gpus: a TensorRT variant needs a GPU: set num_gpus (it places the replicas on the GPU worker group)" $where) -}}
{{- end -}}
{{- if and (not $inRouter) (eq ($v.device | default "") "cuda") (le $gpus 0.0) -}}
{{- $problems = append $problems (printf "%s.resources.num_gpus: a variant on device cuda needs a GPU: set num_gpus (e.g. 1)" $where) -}}
{{- end -}}
{{- if and (eq ($v.device | default "") "cpu") (eq ($v.precision | default "") "fp16") -}}
{{- $problems = append $problems (printf "%s.precision: fp16 runs on device cuda only; on cpu use fp32 or bf16" $where) -}}
{{- end -}}
{{- if and (not $inRouter) (gt $gpus 0.0) (not $.Values.gpuWorkers.enabled) -}}
{{- $problems = append $problems (printf "%s.resources.num_gpus: %v GPU per replica, but gpuWorkers.enabled is false: no Ray node would have a GPU to place it on" $where $gpus) -}}
{{- end -}}
{{- end -}}
{{- if and (kindIs "map" $gw.admin) (not (kindIs "invalid" $gw.admin.token)) -}}
{{- $problems = append $problems "gateway.admin.token: do not put the admin token in values: set admin.token (the chart keeps it in a Secret) or admin.existingSecret" -}}
{{- end -}}
{{- $http := include "slimgate.gateway" . | fromYaml | dig "http" (dict) -}}
{{- if has $http.host (list "127.0.0.1" "localhost" "::1") -}}
{{- $problems = append $problems (printf "gateway.http.host: %s is reachable only from inside the head pod; use 0.0.0.0" $http.host) -}}
{{- end -}}
{{- $grpc := not (kindIs "invalid" $http.grpc_port) -}}
{{- if and $grpc (eq (int $http.grpc_port) (int $http.port)) -}}
{{- $problems = append $problems (printf "gateway.http.grpc_port: must differ from port (%d)" (int $http.port)) -}}
{{- end -}}
{{- $haproxy := eq $http.ingress "haproxy" -}}
{{- $taken := "6379 GCS, 8265 dashboard, 10001 client, 8080 metrics, 52365 dashboard agent, 9102 controller" -}}
{{- if $haproxy -}}
{{- $taken = printf "%s, 8404 HAProxy stats, 9101 HAProxy exporter, 30000-31000 and 40000-41000 the replicas' direct ingress" $taken -}}
{{- end -}}
{{- range $field := list "port" "grpc_port" -}}
{{- $port := get $http $field -}}
{{- if not (kindIs "invalid" $port) -}}
{{- $port = int $port -}}
{{- $inRange := and $haproxy (or (and (ge $port 30000) (le $port 31000)) (and (ge $port 40000) (le $port 41000))) -}}
{{- if or (has $port (list 6379 8265 10001 8080 52365 9102)) (and $haproxy (has $port (list 8404 9101))) $inRange -}}
{{- $problems = append $problems (printf "gateway.http.%s: %d is taken by Ray or the chart (%s)" $field $port $taken) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $rayVersion := toString .Values.rayVersion -}}
{{- if and .Values.ray.auth.enabled (regexMatch "^[0-9]+\\.[0-9]+(\\.[0-9]+)?$" $rayVersion) (not (semverCompare ">=2.52.0-0" $rayVersion)) -}}
{{- $problems = append $problems (printf "ray.auth.enabled: Ray's token authentication needs Ray 2.52 or newer, rayVersion is %s (set ray.auth.enabled: false for an older Ray)" $rayVersion) -}}
{{- end -}}
{{- if .Values.networkPolicy.enabled -}}
{{- range $name := list "prometheusFrom" "kuberayOperatorFrom" "gatewayFrom" "dashboardFrom" "controllerFrom" -}}
{{- range $i, $peer := get $.Values.networkPolicy $name | default list -}}
{{- if not (or (kindIs "map" $peer.namespaceSelector) (kindIs "map" $peer.podSelector) (kindIs "map" $peer.ipBlock)) -}}
{{- $problems = append $problems (printf "networkPolicy.%s[%d]: a peer needs a namespaceSelector, a podSelector or an ipBlock" $name $i) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not .Values.networkPolicy.kuberayOperatorFrom -}}
{{- $problems = append $problems "networkPolicy.kuberayOperatorFrom: must name the KubeRay operator's pods: it deploys serveConfigV2 through the dashboard, which nothing else may reach" -}}
{{- end -}}
{{- end -}}
{{- if $problems -}}
{{- fail (printf "\ninvalid values:\n  %s" (join "\n  " $problems)) -}}
{{- end -}}
{{- end -}}
