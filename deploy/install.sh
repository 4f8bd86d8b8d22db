#!/usr/bin/env bash
# Install the jovial-guard webhook into the current kubectl context.
#   deploy/install.sh [HUB_NAMESPACE]
# The hub's identity (namespace and service account) is one setting:
# settings.hub.namespace / settings.hub.service_account in policies/data.json, which the
# policy trusts, and which the z2jh values (hub.serviceAccount.name) must match. This script
# reads it from there; a HUB_NAMESPACE argument that disagrees is refused (edit data.json,
# so the policy trusts the same service account the namespace is guarded for).
#
# Makes (or rotates) the serving certificate, stores it as the TLS Secret, labels the hub
# namespace jovial-guard.io/guarded=true (the webhooks' namespaceSelector; KubeSpawner
# labels per-user namespaces the same way), applies the manifests and puts the CA into both
# webhook configurations' caBundle. Rerun to rotate the serving certificate: the webhook
# reloads it without a restart.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA="$HERE/../policies/data.json"
read -r HUB_NS HUB_SA < <(python3 -c 'import json, sys; h = json.load(open(sys.argv[1]))["settings"]["hub"]; print(h["namespace"], h["service_account"])' "$DATA")
if [ "$#" -ge 1 ] && [ "$1" != "$HUB_NS" ]; then
  echo "install.sh: policies/data.json trusts the hub service account system:serviceaccount:$HUB_NS:$HUB_SA," >&2
  echo "  but you asked for namespace '$1'. Set settings.hub.namespace in policies/data.json to '$1'" >&2
  echo "  (and roll the webhook so its OPA loads it), then rerun." >&2
  exit 2
fi
echo "hub identity: system:serviceaccount:$HUB_NS:$HUB_SA (from policies/data.json)"
CERTS="${JOVIAL_GUARD_CERT_DIR:-$HOME/.config/jovial-guard/webhook-certs}"
jovial-guard webhook certs "$CERTS" --service jovial-guard-webhook --namespace jovial-guard
kubectl apply -f "$HERE/webhook/namespace.yaml"
kubectl create namespace "$HUB_NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$HUB_NS" jovial-guard.io/guarded=true --overwrite
kubectl -n jovial-guard create secret tls jovial-guard-webhook-tls \
  --cert="$CERTS/tls.crt" --key="$CERTS/tls.key" --dry-run=client -o yaml | kubectl apply -f -
jovial-guard webhook netpol --data "$DATA" --namespace "$HUB_NS" >"$HERE/networkpolicy/notebooks.yaml"
kubectl apply -k "$HERE"
ca="$(base64 -w0 <"$CERTS/ca.crt")"
for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
  kubectl patch "$kind" jovial-guard --type=json -p "[
    {\"op\":\"replace\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$ca\"}]"
done
kubectl -n jovial-guard rollout status deployment/jovial-guard-webhook
