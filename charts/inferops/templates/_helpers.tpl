{{/*
Helpers of the inferops chart. Every name starts with "inferops." so that a parent chart's
helpers never collide with these.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "inferops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: fullnameOverride, else the release name when it already
contains the chart name (`helm install inferops ...` gives "inferops", not
"inferops-inferops"), else "<release>-<chart>". 63 characters at most (DNS labels).
*/}}
{{- define "inferops.fullname" -}}
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

{{/* "<chart>-<version>", the value of the helm.sh/chart label. */}}
{{- define "inferops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the operator's pod: they never change across upgrades. */}}
{{- define "inferops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inferops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The recommended labels, on every object of the release. */}}
{{- define "inferops.labels" -}}
helm.sh/chart: {{ include "inferops.chart" . }}
{{ include "inferops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: inferops
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "inferops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "inferops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image, repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "inferops.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The router image of resources that name none: the operator's image unless set. */}}
{{- define "inferops.routerImage" -}}
{{- default (include "inferops.image" .) .Values.defaultImages.router }}
{{- end }}

{{/*
The operator's least-privilege rules, as a YAML list. files/rules.yaml is generated from the
operator's registry of every kind it touches (`python -m inferops.registry`); a unit test
fails when the two disagree.
*/}}
{{- define "inferops.rules" -}}
{{- .Files.Get "files/rules.yaml" | fromYamlArray | toYaml }}
{{- end }}
