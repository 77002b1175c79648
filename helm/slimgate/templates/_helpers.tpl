{{/* Names, labels and the pieces every pod shares. */}}

{{- define "slimgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* At most 40 characters: KubeRay derives cluster, pod and service names from the RayService's. */}}
{{- define "slimgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "slimgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slimgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "slimgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "slimgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: slimgate
{{- end -}}

{{- define "slimgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* KubeRay's head service of the RayService (it follows the active cluster). */}}
{{- define "slimgate.headService" -}}
{{- printf "%s-head-svc" (include "slimgate.fullname" .) -}}
{{- end -}}

{{- define "slimgate.gatewayService" -}}
{{- printf "%s-gateway" (include "slimgate.fullname" .) -}}
{{- end -}}

{{- define "slimgate.adminSecret" -}}
{{- default (printf "%s-admin" (include "slimgate.fullname" .)) .Values.admin.existingSecret -}}
{{- end -}}

{{/* The Secret holding Ray's auth token under auth_token (KubeRay's key for authOptions.secretName). */}}
{{- define "slimgate.rayAuthSecret" -}}
{{- default (printf "%s-ray-auth" (include "slimgate.fullname" .)) .Values.ray.auth.existingSecret -}}
{{- end -}}

{{/* The labels every Ray pod of this release carries (and NetworkPolicies select them by). */}}
{{- define "slimgate.rayPodLabels" -}}
{{ include "slimgate.selectorLabels" . }}
app.kubernetes.io/component: ray
{{- end -}}

{{- define "slimgate.controllerPodLabels" -}}
{{ include "slimgate.selectorLabels" . }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "slimgate.registryClaim" -}}
{{- default (printf "%s-registry" (include "slimgate.fullname" .)) .Values.registry.existingClaim -}}
{{- end -}}

{{- define "slimgate.controllerClaim" -}}
{{- default (printf "%s-controller-state" (include "slimgate.fullname" .)) .Values.controller.persistence.existingClaim -}}
{{- end -}}

{{/* The gateway config with every default filled in (files/gateway-defaults.yaml, generated from
serving.config). Returned as YAML: include it and fromYaml. */}}
{{- define "slimgate.gatewayDefaults" -}}
{{- .Files.Get "files/gateway-defaults.yaml" -}}
{{- end -}}

{{- define "slimgate.gateway" -}}
{{- $d := include "slimgate.gatewayDefaults" . | fromYaml -}}
{{- /* A null in values stays null (http.grpc_port: null = no gRPC): merging overwrites with it. */ -}}
{{- toYaml (mustMergeOverwrite (deepCopy $d.gateway) (deepCopy .Values.gateway)) -}}
{{- end -}}

{{/* The environment variable carrying the admin token, as the gateway config names it. */}}
{{- define "slimgate.tokenEnv" -}}
{{- $gw := include "slimgate.gateway" . | fromYaml -}}
{{- $gw.admin.token_env -}}
{{- end -}}

{{/* The environment the gateway's ingress mode needs in every Ray process, as a YAML map: the
mirror of serving/ray_env.py:ingress_env (held equal to it by tests/helm). Ray Serve reads it when
its processes start, so every node must start with it. */}}
{{- define "slimgate.ingressEnv" -}}
{{- $gw := include "slimgate.gateway" . | fromYaml -}}
{{- if eq $gw.http.ingress "haproxy" -}}
RAY_SERVE_ENABLE_HA_PROXY: "1"
RAY_SERVE_THROUGHPUT_OPTIMIZED: "1"
{{- end -}}
{{- end -}}

{{/* Environment shared by the Ray containers and the controller. */}}
{{- define "slimgate.env" -}}
- name: {{ include "slimgate.tokenEnv" . }}
  valueFrom:
    secretKeyRef:
      name: {{ include "slimgate.adminSecret" . }}
      key: {{ .Values.admin.secretKey }}
{{- if .Values.ray.auth.enabled }}
# Ray's token: Ray processes require it, and the controller presents it to the dashboard.
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "slimgate.rayAuthSecret" . }}
      key: auth_token
{{- end }}
# Read-only root filesystem: everything that writes does so under /tmp.
- name: HOME
  value: /tmp
{{- end -}}

{{/* The pod annotations a plain Prometheus discovers scrape targets by. */}}
{{- define "slimgate.scrapeAnnotations" -}}
{{- if .root.Values.monitoring.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}
