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

{{/* The selector labels as key=value,key=value (sorted), for the operator's NetworkPolicy settings. */}}
{{- define "modeldeploy.selectorLabelPairs" -}}
{{- $pairs := list }}
{{- range $key, $value := include "modeldeploy.selectorLabels" . | fromYaml }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
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

{{/* Whether the operator makes each router's ServiceAccount, Role and RoleBindings. */}}
{{- define "modeldeploy.manageRouterRBAC" -}}
{{- if .Values.router.manageRBAC }}true{{ else }}false{{ end }}
{{- end }}

{{/* Kind of the router's EndpointSlice role: one ClusterRole, or a Role per watched namespace. */}}
{{- define "modeldeploy.routerRoleKind" -}}
{{- if eq .Values.watch.scope "cluster" }}ClusterRole{{ else }}Role{{ end }}
{{- end }}

{{/*
What the operator needs in every namespace it serves; used by the ClusterRole (cluster scope) and
by one Role per watched namespace (namespaced scope). Each rule says why it exists; docs/operator.md
has the table, and tests/unit/operator/test_operator_rbac.py checks every verb against the code.
No `update` on owned kinds (server-side apply is create + patch), no `get` (reads come from
list-then-watch caches, docs/operator.md "Watches and caches"), no `escalate`, and `bind` on one role only.
*/}}
{{- define "modeldeploy.operatorRules" -}}
# Its own resource: kopf lists and watches it (every event queues a reconcile), and patches away the
# finalizer an older operator put on it.
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments]
  verbs: [list, watch, patch]
# The one status write per reconcile (a merge patch of /status).
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments/status]
  verbs: [patch]
# Owner references with blockOwnerDeletion need update on the owner's finalizers subresource.
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments/finalizers]
  verbs: [update]
# Owned objects it applies (create + patch), caches (list + watch: every change queues its owner)
# and prunes (delete); Deployments are scaled too (patch).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch, delete]
{{- if eq (include "modeldeploy.manageRouterRBAC" .) "true" }}
# The router's ConfigMap: applied, listed, pruned; watch too because the operator grants list and
# watch to each router (on its own ConfigMap only), and RBAC lets it grant only rights it holds.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, watch, create, patch, delete]
# Each router's ServiceAccount, its ConfigMap Role and the two RoleBindings.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [list, watch, create, patch, delete]
# Bind the chart's EndpointSlice role for routers, that role only, by name (never `escalate`).
- apiGroups: [rbac.authorization.k8s.io]
  resources: [{{ ternary "clusterroles" "roles" (eq .Values.watch.scope "cluster") }}]
  resourceNames: [{{ include "modeldeploy.routerRoleName" . }}]
  verbs: [bind]
{{- else }}
# The router's ConfigMap: applied, cached (list + watch) and pruned.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, watch, create, patch, delete]
{{- end }}
# Events on ModelDeployments (its own, and kopf's warnings): core/v1, created.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# NetworkPolicies of each ModelDeployment: cached and pruned always (turning them off removes the
# operator's), applied only when it makes them.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch, delete{{ if .Values.networkPolicies.enabled }}, create, patch{{ end }}]
# Ready pod IPs of each revision, for the built-in metrics scrape and readiness (cached: list +
# watch of the pods labelled modeldeploy.io/deployment); a pod counts only if its ReplicaSet is
# controlled by one of the operator's Deployments.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [list, watch]
{{- if .Values.gatewayAPI.enabled }}
# The gatewayAPI traffic provider writes one HTTPRoute per ModelDeployment.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [list, watch, create, patch, delete]
{{- end }}
{{- end }}

{{/* What every router reads through the chart's role: the EndpointSlices of its namespace (a list,
then a watch). Its own ConfigMap comes from a Role the operator makes per router (resourceNames). */}}
{{- define "modeldeploy.routerRules" -}}
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
{{- end }}

{{/* The shared router role of router.manageRBAC=false: the routers of a namespace share one
ServiceAccount, so it reads every ConfigMap of the namespace (names are not known in advance). */}}
{{- define "modeldeploy.sharedRouterRules" -}}
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, watch]
{{ include "modeldeploy.routerRules" . }}
{{- end }}
