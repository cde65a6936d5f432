{{- define "shop.fullname" -}}
{{- if contains "shop" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-shop" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "shop.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: shop
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "shop.selector" -}}
app.kubernetes.io/name: shop
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* A component's settings: the defaults overridden by its own block. Call with (list $ name). */}}
{{- define "shop.component" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $own := index $root.Values.components $name -}}
{{- toYaml (mergeOverwrite (deepCopy $root.Values.defaults) (deepCopy $own)) -}}
{{- end -}}

{{- define "shop.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- include "shop.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "shop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shop.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "shop.image" -}}
{{- $root := index . 0 -}}
{{- $tag := index . 1 -}}
{{- printf "%s:%s" $root.Values.image.repository (default (default $root.Chart.AppVersion $root.Values.image.tag) $tag) -}}
{{- end -}}
