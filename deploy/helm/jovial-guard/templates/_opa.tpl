{{/*
The OPA sidecar of the cluster audit and of the webhook with webhook.engine opa (with the
default wasm each webhook worker decides itself, and the pod runs no OPA): 127.0.0.1:8181 only, token
authentication and files/authz.rego (only the holder of the pod-local token may ask).
Policies come either from the image (init "policies" merges the chart's policy data over
the shipped data.json) or, with policy.bundles.enabled, only as signed bundles from the
bundle service, verified by OPA with policy.publicKey / policy.keyId. The bundles name
their roots, so activating one leaves system.authz and the token digest in place.
*/}}

{{- define "jovial-guard.bundles.name" -}}
{{- printf "%s-bundles" (include "jovial-guard.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "jovial-guard.bundles.url" -}}
{{- printf "http://%s.%s.svc:8282" (include "jovial-guard.bundles.name" .) .Release.Namespace -}}
{{- end -}}

{{/* opa_bundle_config(service_url=..., key=..., report_status=...) of jovial_guard/policy/bundles.py. */}}
{{- define "jovial-guard.opa.bundleConfig" -}}
{{- $root := .root -}}
{{- $p := $root.Values.policy -}}
{{- if not (and $p.publicKey $p.keyId) -}}
{{- fail "policy.bundles.enabled needs policy.publicKey (the store's signing.pub, PEM) and policy.keyId (the store's keyid)" -}}
{{- end -}}
{{- $bundle := dict "service" "policy_store" "resource" "bundles/jovial_guard.tar.gz" "persist" false "polling" (dict "min_delay_seconds" 1 "max_delay_seconds" 2 "long_polling_timeout_seconds" 10) "signing" (dict "keyid" $p.keyId) -}}
{{- $config := dict "services" (dict "policy_store" (dict "url" (include "jovial-guard.bundles.url" $root))) "bundles" (dict "jovial_guard" $bundle) "keys" (dict $p.keyId (dict "algorithm" "ES256" "key" $p.publicKey)) -}}
{{- if .reportStatus -}}
{{- $_ := set $config "status" (dict "service" "policy_store") -}}
{{- end -}}
{{- $config | toPrettyJson -}}
{{- end -}}

{{/* Init containers: "policies" (without signed bundles) and, with .opa, the sidecar's
token. Called with (dict "root" $ "opa" BOOL). */}}
{{- define "jovial-guard.opa.initContainers" -}}
{{- $withOpa := .opa -}}
{{- with .root -}}
{{- $image := include "jovial-guard.image" . -}}
{{- if not .Values.policy.bundles.enabled }}
- name: policies
  image: {{ $image }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: [jovial-guard, webhook, prepare-policies]
  args:
  - --overlay=/policy-data/policy-data.json
  - --out=/policies/policies
  - --meta=/policies/meta.json
  securityContext:
    {{- include "jovial-guard.containerSecurityContext" . | nindent 4 }}
  resources:
    {{- toYaml .Values.initResources | nindent 4 }}
  volumeMounts:
  - {name: policies, mountPath: /policies}
  - {name: config, mountPath: /policy-data, readOnly: true}
{{- end }}
{{- if $withOpa }}
- name: opa-token
  image: {{ $image }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
  - python3
  - -c
  - |
    import hashlib, json, os, secrets
    token = secrets.token_urlsafe(32)
    fd = os.open("/opa-token/token", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    os.write(fd, token.encode()); os.close(fd)
    with open("/opa-token/authz-data.json", "w") as fh:
        json.dump({"jovial_guard_authz": {"token_sha256": hashlib.sha256(token.encode()).hexdigest()}}, fh)
  securityContext:
    {{- include "jovial-guard.containerSecurityContext" . | nindent 4 }}
  resources:
    {{- toYaml .Values.initResources | nindent 4 }}
  volumeMounts:
  - {name: opa-token, mountPath: /opa-token}
{{- end }}
{{- end -}}
{{- end -}}

{{- define "jovial-guard.opa.container" -}}
- name: opa
  image: {{ include "jovial-guard.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: [opa]
  args:
  - run
  - --server
  - --addr=127.0.0.1:8181
  - --diagnostic-addr=127.0.0.1:8282
  - --authentication=token
  - --authorization=basic
  - --disable-telemetry
  - --log-level=error
  {{- if .Values.policy.bundles.enabled }}
  - --config-file=/opa-config/opa-config.json
  {{- else }}
  - /policies/policies
  - /policies/meta.json
  {{- end }}
  - /opa-authz/authz.rego
  - /opa-token/authz-data.json
  securityContext:
    {{- include "jovial-guard.containerSecurityContext" . | nindent 4 }}
  resources:
    {{- toYaml .Values.opa.resources | nindent 4 }}
  volumeMounts:
  {{- if .Values.policy.bundles.enabled }}
  - {name: opa-config, mountPath: /opa-config, readOnly: true}
  {{- else }}
  - {name: policies, mountPath: /policies, readOnly: true}
  {{- end }}
  - {name: opa-authz, mountPath: /opa-authz, readOnly: true}
  - {name: opa-token, mountPath: /opa-token, readOnly: true}
{{- end -}}

{{/* The policy volumes and, with .opa, the sidecar's; .configKey names the ConfigMap key
of this pod's OPA configuration. */}}
{{- define "jovial-guard.opa.volumes" -}}
{{- $root := .root -}}
{{- $name := include "jovial-guard.webhook.name" $root -}}
{{- if not $root.Values.policy.bundles.enabled }}
- name: config
  configMap: {name: {{ $name }}, items: [{key: policy-data.json, path: policy-data.json}]}
- name: policies
  emptyDir: {sizeLimit: 32Mi}
{{- end }}
{{- if .opa }}
{{- if $root.Values.policy.bundles.enabled }}
- name: opa-config
  configMap: {name: {{ $name }}, items: [{key: {{ .configKey }}, path: opa-config.json}]}
{{- end }}
- name: opa-authz
  configMap: {name: {{ $name }}, items: [{key: authz.rego, path: authz.rego}]}
- name: opa-token
  emptyDir: {medium: Memory, sizeLimit: 1Mi}
{{- end }}
{{- end -}}

{{/*
API credentials for one container only (the pod's automountServiceAccountToken stays false,
so the OPA sidecar never holds a token): the projected volume Kubernetes would mount.
*/}}
{{- define "jovial-guard.apiAccess.volume" -}}
- name: kube-api-access
  projected:
    defaultMode: 0444
    sources:
    - serviceAccountToken: {path: token, expirationSeconds: 3607}
    - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
    - downwardAPI: {items: [{path: namespace, fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}}]}
{{- end -}}

{{- define "jovial-guard.apiAccess.mount" -}}
- {name: kube-api-access, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
{{- end -}}

{{/* Egress to the API server (networkPolicy.apiServer). */}}
{{- define "jovial-guard.netpol.apiServer" -}}
- ports:
  {{- range .Values.networkPolicy.apiServer.ports }}
  - {protocol: TCP, port: {{ . }}}
  {{- end }}
  {{- with .Values.networkPolicy.apiServer.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{- define "jovial-guard.netpol.dns" -}}
- to:
  - namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: kube-system
    podSelector:
      matchLabels:
        k8s-app: kube-dns
  ports:
  - {protocol: UDP, port: 53}
  - {protocol: TCP, port: 53}
{{- end -}}

{{/* Egress to this release's bundle service. */}}
{{- define "jovial-guard.netpol.bundles" -}}
- to:
  - podSelector:
      matchLabels:
        {{- include "jovial-guard.componentSelectorLabels" (dict "root" . "component" "bundles") | nindent 8 }}
  ports:
  - {protocol: TCP, port: 8282}
{{- end -}}
