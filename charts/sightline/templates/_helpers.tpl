{{/*
Names, labels and the image, shared by every template.
*/}}

{{- define "sightline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name: "<release>-sightline", or the release name when it already says sightline. */}}
{{- define "sightline.fullname" -}}
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

{{/* The operator's Deployment, Service, PodDisruptionBudget and RBAC objects. */}}
{{- define "sightline.operatorName" -}}
{{- printf "%s-operator" (include "sightline.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's own objects: name and instance (tenant workloads carry the tenant as instance). */}}
{{- define "sightline.baseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "sightline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* What the operator's Deployment, Service, PodDisruptionBudget and monitors select. */}}
{{- define "sightline.selectorLabels" -}}
{{ include "sightline.baseSelectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Every object of the release; a component label is added by each. */}}
{{- define "sightline.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sightline.baseSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sightline
{{- end }}

{{/* The operator's objects. */}}
{{- define "sightline.operatorLabels" -}}
{{ include "sightline.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "sightline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sightline.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest when a digest is set, else repository:tag (the appVersion by default). */}}
{{- define "sightline.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The ClickHouse credentials Secret the operator names to tenants ("" when none). */}}
{{- define "sightline.clickhouseSecret" -}}
{{- $c := .Values.clickhouse.credentials }}
{{- if and $c.create $c.existingSecret }}
{{- fail "clickhouse.credentials: set either existingSecret or create, not both" }}
{{- end }}
{{- if $c.create }}
{{- printf "%s-clickhouse" (include "sightline.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $c.existingSecret }}
{{- end }}
{{- end }}
