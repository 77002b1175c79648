{{/*
The pod template of one Ray group (head or worker). Called with a dict:
  root: the chart context, group: the group's values, component: ray-head / ray-worker,
  container: the container name, image: the image, ports: the container ports (list of dicts),
  gpus: nvidia.com/gpu limit (0 = none).
*/}}
{{- define "slimgate.rayPodTemplate" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $gw := include "slimgate.gateway" $root | fromYaml -}}
metadata:
  # No chart or app version here: a changed pod template makes KubeRay start a new Ray cluster.
  labels:
    {{- include "slimgate.rayPodLabels" $root | nindent 4 }}
    app.kubernetes.io/part-of: slimgate
    slimgate/ray-group: {{ .component }}
    {{- with .group.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- $annotations := merge (dict) (.group.podAnnotations | default dict) (include "slimgate.scrapeAnnotations" (dict "root" $root "port" 8080) | fromYaml) }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if not $v.ray.autoscaler }}
  # Ray pods need no Kubernetes API access (the in-tree autoscaler would).
  automountServiceAccountToken: false
  {{- end }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.ray.podSecurityContext | nindent 4 }}
  {{- with $v.ray.initContainers }}
  initContainers:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .container }}
      image: {{ .image }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      securityContext:
        {{- toYaml $v.ray.securityContext | nindent 8 }}
      ports:
        {{- toYaml .ports | nindent 8 }}
      env:
        {{- include "slimgate.env" $root | nindent 8 }}
        - name: SLIMGATE_REGISTRY
          value: {{ $gw.registry | quote }}
        - name: RAY_USAGE_STATS_ENABLED
          value: "0"
        {{- if $v.ray.auth.enabled }}
        # Every Ray process requires the token (KubeRay sets the same from authOptions; it keeps
        # what the pod template already says).
        - name: RAY_AUTH_MODE
          value: token
        {{- end }}
        {{- range $name, $value := include "slimgate.ingressEnv" $root | fromYaml }}
        - name: {{ $name }}
          value: {{ $value | quote }}
        {{- end }}
        {{- with $v.ray.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- $resources := deepCopy (.group.resources | default dict) }}
      {{- if gt (int .gpus) 0 }}
      {{- $limits := $resources.limits | default dict }}
      {{- $_ := set $limits "nvidia.com/gpu" (int .gpus) }}
      {{- $_ := set $resources "limits" $limits }}
      {{- end }}
      {{- with $resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: registry
          mountPath: {{ $gw.registry }}
          readOnly: true
          {{- with $v.registry.subPath }}
          subPath: {{ . }}
          {{- end }}
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: registry
      {{- if $v.registry.volume }}
      {{- toYaml $v.registry.volume | nindent 6 }}
      {{- else }}
      persistentVolumeClaim:
        claimName: {{ include "slimgate.registryClaim" $root }}
        readOnly: true
      {{- end }}
    - name: tmp
      emptyDir: {}
  {{- with .group.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{- define "slimgate.rayStartParams" -}}
{{- $params := dict "metrics-export-port" "8080" -}}
{{- range $k, $val := .extra -}}
{{- $_ := set $params $k (toString $val) -}}
{{- end -}}
{{- toYaml $params -}}
{{- end -}}
