{{/*
Names and labels, in the style of the kube-state-metrics and bitnami charts.
*/}}

{{/* The chart name, overridable. */}}
{{- define "modeldeploy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: release name, plus the chart name unless it already contains it. */}}
{{- define "modeldeploy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-name-version, for the helm.sh/chart label. */}}
{{- define "modeldeploy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator pods; never change them after the first install. */}}
{{- define "modeldeploy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of every object of the release, without a component. */}}
{{- define "modeldeploy.commonLabels" -}}
helm.sh/chart: {{ include "modeldeploy.chart" . }}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: modeldeploy
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the operator's objects. */}}
{{- define "modeldeploy.labels" -}}
{{ include "modeldeploy.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of the router's objects. */}}
{{- define "modeldeploy.routerLabels" -}}
{{ include "modeldeploy.commonLabels" . }}
app.kubernetes.io/component: router
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "modeldeploy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modeldeploy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference: [registry/]repository:tag. The registry defaults to image.registry (empty:
the repository is the whole name), the tag to the chart's appVersion. */}}
{{- define "modeldeploy.image" -}}
{{- $registry := default .root.Values.image.registry .image.registry | trimSuffix "/" }}
{{- $repository := .image.repository | trimPrefix "/" }}
{{- if $registry }}{{ $repository = printf "%s/%s" $registry $repository }}{{ end }}
{{- printf "%s:%s" $repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* Namespaces the operator watches: empty for a cluster-wide install. */}}
{{- define "modeldeploy.watchNamespaces" -}}
{{- if eq .Values.watch.scope "namespaced" }}
{{- default (list .Release.Namespace) .Values.watch.namespaces | join "," }}
{{- end }}
{{- end }}

{{/* Name of the ClusterRole (or Role) the router's ServiceAccount is bound to. */}}
{{- define "modeldeploy.routerRoleName" -}}
{{- printf "%s-router" (include "modeldeploy.fullname" .) }}
{{- end }}

{{/*
What the operator needs in every namespace it serves; used by the ClusterRole (cluster scope) and
by one Role per watched namespace (namespaced scope). Each rule says why it exists.
*/}}
{{- define "modeldeploy.operatorRules" -}}
# Its own resource: watch it, and patch it (kopf writes finalizers and annotations on the object).
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments]
  verbs: [get, list, watch, patch, update]
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments/status]
  verbs: [get, patch, update]
# Owner references with blockOwnerDeletion need update on the owner's finalizers subresource.
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments/finalizers]
  verbs: [update]
# The objects it owns: server-side apply (create + patch), observe, and prune old revisions.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, update, delete]
{{- if eq .Values.watch.scope "cluster" }}
# The router's identity in each namespace, bound to the router ClusterRole. RBAC lets the operator
# grant it because the operator itself holds every right in that role (no `bind` verb needed).
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings]
  verbs: [get, list, watch, create, patch, update, delete]
{{- end }}
# Events on ModelDeployments (kopf posts core/v1 Events; newer clients use events.k8s.io).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# Readiness of revisions and metrics scraping for analysis (read only).
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
{{- if .Values.gatewayAPI.enabled }}
# The gatewayAPI traffic provider writes one HTTPRoute per ModelDeployment.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, create, patch, update, delete]
{{- end }}
{{- end }}

{{/* What the router reads: its ConfigMap and the EndpointSlices of the revisions' Services. */}}
{{- define "modeldeploy.routerRules" -}}
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
{{- end }}
