{{/* Names and labels shared by every template. */}}

{{- define "wattplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wattplane.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "wattplane.operatorName" -}}
{{- printf "%s-operator" (include "wattplane.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wattplane.agentName" -}}
{{- printf "%s-agent" (include "wattplane.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wattplane.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "wattplane.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "wattplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wattplane
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "agent"). */}}
{{- define "wattplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wattplane.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The agent ServiceAccount as the API server names it (RBAC subject, admission match). */}}
{{- define "wattplane.agentUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "wattplane.agentName" .) }}
{{- end }}
