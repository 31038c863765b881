{{/* Chart name, overridable with nameOverride. */}}
{{- define "kuberag.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, truncated at 63 characters (DNS label limit of some name fields).
The release name is used alone when it already contains the chart name.
*/}}
{{- define "kuberag.fullname" -}}
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

{{/* The operator's objects: "<fullname>-operator", still at most 63 characters. */}}
{{- define "kuberag.operatorName" -}}
{{- printf "%s-operator" (include "kuberag.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/* The operator's metrics Service: a DNS label, so at most 63 characters too. */}}
{{- define "kuberag.metricsServiceName" -}}
{{- printf "%s-metrics" (include "kuberag.operatorName" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{- define "kuberag.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels of every object of this release. */}}
{{- define "kuberag.labels" -}}
helm.sh/chart: {{ include "kuberag.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kuberag
{{- end }}

{{/*
Selector labels of the operator pods. The name is "<name>-operator" (as in manifests/), never the
"kuberag" name the operator gives API pods, so a RagService named like the release in this
namespace can never select the operator's pods.
*/}}
{{- define "kuberag.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "kuberag.name" . | trunc 54 | trimSuffix "-" }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kuberag.operatorLabels" -}}
{{ include "kuberag.labels" . }}
{{ include "kuberag.operatorSelectorLabels" . }}
{{- end }}

{{- define "kuberag.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kuberag.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The kuberag image (operator, API pods of the sample, helm test): tag defaults to appVersion. */}}
{{- define "kuberag.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Leader election: asked for, or needed because more than one replica runs. */}}
{{- define "kuberag.leaderElect" -}}
{{- if or .Values.operator.leaderElection.enabled (gt (int .Values.operator.replicas) 1) }}true{{ end }}
{{- end }}

{{/* Namespace of the sample RagService and of the RagService `helm test` asks. */}}
{{- define "kuberag.sampleNamespace" -}}
{{- default .Release.Namespace .Values.samples.namespace }}
{{- end }}
