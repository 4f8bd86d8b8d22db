{{/*
Serving certificate made by Helm (tls.certManager.enabled=false).

Computed once per render and shared by the Secret and both webhook configurations:
- the CA (Secret <webhook>-ca) is kept across upgrades (lookup) and made only when absent;
- the serving certificate (Secret <webhook>-tls) is kept while it is signed by that CA, names
  the same hosts and is valid for more than tls.renewBeforeDays; otherwise a new one is signed,
  so `helm upgrade` renews it in place and the caBundle does not change;
- if the CA was replaced (its Secret deleted), the caBundle carries the new CA and the one the
  running replicas still serve with, so no replica is distrusted while pods roll.
`helm template` has no cluster to look up: it always renders fresh material.
*/}}
{{- define "jovial-guard.tls.material" -}}
{{- if not (hasKey .Values "_tlsMaterial") -}}
{{- $caSecret := lookup "v1" "Secret" .Release.Namespace (include "jovial-guard.ca.secret" .) -}}
{{- $served := lookup "v1" "Secret" .Release.Namespace (include "jovial-guard.tls.secret" .) -}}
{{- $ca := dict -}}
{{- if and $caSecret $caSecret.data (hasKey $caSecret.data "tls.crt") (hasKey $caSecret.data "tls.key") -}}
{{- $ca = buildCustomCert (index $caSecret.data "tls.crt") (index $caSecret.data "tls.key") -}}
{{- else -}}
{{- $ca = genCA (printf "%s-ca" (include "jovial-guard.webhook.name" .)) (int .Values.tls.caValidityDays) -}}
{{- end -}}
{{- $dnsNames := include "jovial-guard.service.dnsNames" . | fromJsonArray -}}
{{- $ips := .Values.tls.extraIpAddresses -}}
{{- $hosts := printf "%s|%s" (join "," $dnsNames) (join "," $ips) | sha256sum -}}
{{- $caSum := $ca.Cert | sha256sum -}}
{{- $renewAt := add (now | unixEpoch | int64) (mul (int .Values.tls.renewBeforeDays) 86400) -}}
{{- $keep := false -}}
{{- if and $served $served.metadata.annotations $served.data -}}
{{- $ann := $served.metadata.annotations -}}
{{- if and (eq (get $ann "jovial-guard.io/ca-sha256") $caSum) (eq (get $ann "jovial-guard.io/hosts-sha256") $hosts) (gt (get $ann "jovial-guard.io/not-after-unix" | default "0" | int64) $renewAt) -}}
{{- $keep = true -}}
{{- end -}}
{{- end -}}
{{- $m := dict "caCert" $ca.Cert "caKey" $ca.Key "caSum" $caSum "hosts" $hosts -}}
{{- if $keep -}}
{{- $_ := set $m "cert" (index $served.data "tls.crt" | b64dec) -}}
{{- $_ := set $m "key" (index $served.data "tls.key" | b64dec) -}}
{{- $_ := set $m "notAfter" (get $served.metadata.annotations "jovial-guard.io/not-after-unix") -}}
{{- else -}}
{{- $cert := genSignedCert (index $dnsNames 2) $ips $dnsNames (int .Values.tls.certValidityDays) $ca -}}
{{- $_ := set $m "cert" $cert.Cert -}}
{{- $_ := set $m "key" $cert.Key -}}
{{- $_ := set $m "notAfter" (add (now | unixEpoch | int64) (mul (int .Values.tls.certValidityDays) 86400) | toString) -}}
{{- end -}}
{{- $bundle := $ca.Cert -}}
{{- if and $served $served.data (hasKey $served.data "ca.crt") -}}
{{- $previous := index $served.data "ca.crt" | b64dec -}}
{{- if ne ($previous | sha256sum) $caSum -}}
{{- $bundle = printf "%s\n%s" (trimSuffix "\n" $ca.Cert) $previous -}}
{{- end -}}
{{- end -}}
{{- $_ := set $m "bundle" $bundle -}}
{{- $_ := set .Values "_tlsMaterial" $m -}}
{{- end -}}
{{- end -}}

{{- define "jovial-guard.tls.caBundle" -}}
{{- include "jovial-guard.tls.material" . -}}
{{- .Values._tlsMaterial.bundle | b64enc -}}
{{- end -}}
