{{/* Names and labels. */}}
{{- define "modelship.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelship.fullname" -}}
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

{{- define "modelship.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelship.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelship.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modelship.labels" -}}
helm.sh/chart: {{ include "modelship.chart" . }}
{{ include "modelship.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelship
{{- end }}

{{- define "modelship.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelship.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}: repository@digest when digest is set (it wins over tag),
else repository:tag, tag defaulting to the chart's appVersion. Call with (list $image $.Chart.AppVersion).
*/}}
{{- define "modelship.image" -}}
{{- $img := index . 0 }}
{{- $appVersion := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $appVersion $img.tag) }}
{{- end }}
{{- end }}

{{/*
The namespaces the operator watches when not cluster-wide, as a JSON array: operator.watchNamespaces, each once.
Fails the install when it is empty, or names a namespace the operator never acts in (operator.excludeNamespaces,
the release namespace): such a Role would hand the operator rights it refuses to use.
*/}}
{{- define "modelship.watchNamespaces" -}}
{{- if .Values.operator.clusterWide -}}
[]
{{- else -}}
{{- $watched := uniq .Values.operator.watchNamespaces -}}
{{- if not $watched -}}
{{- fail "operator.watchNamespaces is empty: list the tenant namespaces to watch, or set operator.clusterWide=true" -}}
{{- end -}}
{{- range $ns := $watched -}}
{{- if or (has $ns $.Values.operator.excludeNamespaces) (eq $ns $.Release.Namespace) -}}
{{- fail (printf "operator.watchNamespaces: %s is excluded (operator.excludeNamespaces, or the release namespace, where the operator keeps its revision caches): the operator never acts there" $ns) -}}
{{- end -}}
{{- end -}}
{{- toJson $watched -}}
{{- end -}}
{{- end }}

{{/* operator.excludeNamespaces plus the release namespace, comma-separated (MODELSHIP_EXCLUDE_NAMESPACES). */}}
{{- define "modelship.excludeNamespaces" -}}
{{- append .Values.operator.excludeNamespaces .Release.Namespace | uniq | join "," -}}
{{- end }}

{{/* The namespace build Jobs run in: build.namespace, else the release namespace. */}}
{{- define "modelship.buildNamespace" -}}
{{- default .Release.Namespace .Values.build.namespace }}
{{- end }}
