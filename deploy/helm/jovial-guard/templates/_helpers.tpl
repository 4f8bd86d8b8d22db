{{/* Names follow z2jh's and Gatekeeper's charts: fullname = release-chart unless overridden. */}}
{{- define "jovial-guard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "jovial-guard.webhook.name" -}}
{{- printf "%s-webhook" (include "jovial-guard.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "jovial-guard.tls.secret" -}}
{{- printf "%s-tls" (include "jovial-guard.webhook.name" .) -}}
{{- end -}}

{{- define "jovial-guard.ca.secret" -}}
{{- printf "%s-ca" (include "jovial-guard.webhook.name" .) -}}
{{- end -}}

{{- define "jovial-guard.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-webhook
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "jovial-guard.labels" -}}
{{ include "jovial-guard.selectorLabels" . }}
app.kubernetes.io/part-of: jovial-guard
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "jovial-guard.image" -}}
{{- printf "%s:%s" .Values.image.name (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The DNS names of the webhook Service, as the API server dials it. */}}
{{- define "jovial-guard.service.dnsNames" -}}
{{- $svc := include "jovial-guard.webhook.name" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) | concat .Values.tls.extraDnsNames | toJson -}}
{{- end -}}

{{/* A restricted container securityContext (Pod Security "restricted"). */}}
{{- define "jovial-guard.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* What the webhooks match: Pods and every kind with a pod template, CREATE and UPDATE. */}}
{{- define "jovial-guard.webhook.match" -}}
admissionReviewVersions: [v1]
sideEffects: None
matchPolicy: Equivalent
timeoutSeconds: {{ .Values.webhook.timeoutSeconds }}
namespaceSelector:
  matchLabels:
    jovial-guard.io/guarded: "true"
rules:
- operations: [CREATE, UPDATE]
  apiGroups: [""]
  apiVersions: [v1]
  resources: [pods, pods/ephemeralcontainers, pods/resize, replicationcontrollers, podtemplates]
  scope: Namespaced
- operations: [CREATE, UPDATE]
  apiGroups: [apps]
  apiVersions: [v1]
  resources: [deployments, statefulsets, daemonsets, replicasets]
  scope: Namespaced
- operations: [CREATE, UPDATE]
  apiGroups: [batch]
  apiVersions: [v1]
  resources: [jobs, cronjobs]
  scope: Namespaced
{{- end -}}

{{/* clientConfig for path $.path: the Service, or webhook.url for a webhook outside the cluster. */}}
{{- define "jovial-guard.webhook.clientConfig" -}}
{{- $root := .root -}}
{{- if $root.Values.webhook.url }}
url: {{ printf "%s%s" (trimSuffix "/" $root.Values.webhook.url) .path | quote }}
{{- else }}
service:
  name: {{ include "jovial-guard.webhook.name" $root }}
  namespace: {{ $root.Release.Namespace }}
  path: {{ .path }}
  port: 443
{{- end }}
{{- if not $root.Values.tls.certManager.enabled }}
caBundle: {{ include "jovial-guard.tls.caBundle" $root }}
{{- end }}
{{- end -}}

{{/* Selector labels of another component (bundles, cluster-audit) of this release. */}}
{{- define "jovial-guard.componentSelectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "jovial-guard.componentLabels" -}}
{{ include "jovial-guard.componentSelectorLabels" . }}
app.kubernetes.io/part-of: jovial-guard
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}
