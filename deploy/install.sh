#!/usr/bin/env bash
# Install the jovial-guard webhook into the current kubectl context.
#   deploy/install.sh [HUB_NAMESPACE]     (default: jhub)
# Makes (or rotates) the serving certificate, stores it as the TLS Secret, applies the
# manifests and puts the CA into both webhook configurations' caBundle. Rerun to rotate
# the serving certificate: the webhook reloads it without a restart.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HUB_NS="${1:-jhub}"
CERTS="${JOVIAL_GUARD_CERT_DIR:-$HOME/.config/jovial-guard/webhook-certs}"
jovial-guard webhook certs "$CERTS" --service jovial-guard-webhook --namespace jovial-guard
kubectl apply -f "$HERE/webhook/namespace.yaml"
kubectl -n jovial-guard create secret tls jovial-guard-webhook-tls \
  --cert="$CERTS/tls.crt" --key="$CERTS/tls.key" --dry-run=client -o yaml | kubectl apply -f -
jovial-guard webhook netpol --data "$HERE/../policies/data.json" --namespace "$HUB_NS" >"$HERE/networkpolicy/notebooks.yaml"
kubectl apply -k "$HERE"
ca="$(base64 -w0 <"$CERTS/ca.crt")"
for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
  kubectl patch "$kind" jovial-guard --type=json -p "[
    {\"op\":\"replace\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$ca\"},
    {\"op\":\"replace\",\"path\":\"/webhooks/0/namespaceSelector/matchLabels/kubernetes.io~1metadata.name\",\"value\":\"$HUB_NS\"}]"
done
kubectl -n jovial-guard rollout status deployment/jovial-guard-webhook
