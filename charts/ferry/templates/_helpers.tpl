{{/*
Shared pieces of Ferry's templates. Object names are fixed, as in manifests/:
the RBAC resourceNames, the webhook's FERRY_* defaults and the
MutatingWebhookConfiguration refer to them, and one cluster runs one Ferry.
*/}}

{{/* The labels every object carries (the same as kustomize adds in manifests/). */}}
{{- define "ferry.commonLabels" -}}
app.kubernetes.io/part-of: ferry
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- with .Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the webhook pods. */}}
{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: ferry
app.kubernetes.io/component: webhook
{{- end }}

{{/* Labels of a webhook object: its selector labels plus the common ones. */}}
{{- define "ferry.labels" -}}
{{ include "ferry.selectorLabels" . }}
{{ include "ferry.commonLabels" . }}
{{- end }}

{{/* metadata.annotations from .Values.annotations plus an optional dict ("extra"). */}}
{{- define "ferry.annotations" -}}
{{- $all := merge (dict) (.extra | default dict) (.root.Values.annotations | default dict) -}}
{{- with $all }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest; the tag defaults to the appVersion. */}}
{{- define "ferry.image" -}}
{{- if .image.digest -}}
{{ .image.repository }}@{{ .image.digest }}
{{- else -}}
{{ .image.repository }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end -}}
{{- end }}

{{- define "ferry.serviceName" -}}ferry-webhook{{- end }}
{{- define "ferry.webhookConfigName" -}}ferry{{- end }}
{{- define "ferry.certManagerSecret" -}}ferry-webhook-cert{{- end }}

{{/* The namespaces no selector may ever match. */}}
{{- define "ferry.neverInjected" -}}
[kube-system, kube-public, {{ .Release.Namespace }}]
{{- end }}
