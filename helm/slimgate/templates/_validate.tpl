{{/*
What values.schema.json cannot say. The first group mirrors the cross-field rules of
serving/config.py (same wording, field paths prefixed with `gateway.`), so that helm refuses a
gateway config the router would refuse; tests/helm holds each to parse_config. The second group is
about the chart itself (placement on GPU workers, the admin token, listening address and port).
Every problem is reported at once.
*/}}
{{- define "slimgate.validate" -}}
{{- $gw := .Values.gateway -}}
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
{{- $replicas := not (kindIs "invalid" $spec.replicas) -}}
{{- $autoscaling := kindIs "map" $spec.autoscaling -}}
{{- if and $replicas $autoscaling -}}
{{- $problems = append $problems (printf "%s.replicas: set either replicas or autoscaling, not both" $where) -}}
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
{{- if and (eq ($spec.backend | default "") "tensorrt") (le $gpus 0.0) -}}
{{- $problems = append $problems (printf "%s.resources.num_gpus: a TensorRT variant needs a GPU: set num_gpus (it places the replicas on the GPU worker group)" $where) -}}
{{- end -}}
{{- if and (gt $gpus 0.0) (not $.Values.gpuWorkers.enabled) -}}
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
{{- if has (int $http.port) (list 6379 8265 10001 8080 52365 9102) -}}
{{- $problems = append $problems (printf "gateway.http.port: %d is taken by Ray or the chart (6379 GCS, 8265 dashboard, 10001 client, 8080 metrics, 52365 dashboard agent, 9102 controller)" (int $http.port)) -}}
{{- end -}}
{{- if $problems -}}
{{- fail (printf "\ninvalid values:\n  %s" (join "\n  " $problems)) -}}
{{- end -}}
{{- end -}}
