#!/usr/bin/env bash
# Install or upgrade jovial-guard (the Helm chart in deploy/helm/jovial-guard) into the
# current kubectl context.
#   deploy/install.sh [HUB_NAMESPACE] [extra helm arguments, e.g. -f my-values.yaml]
# The hub's identity (namespace and service account) is one setting:
# settings.hub.namespace / settings.hub.service_account in policies/data.json, which the
# policy trusts, and which the z2jh values (hub.serviceAccount.name) must match. This script
# reads it from there and passes it to the chart (hub.namespace, hub.serviceAccount); a
# HUB_NAMESPACE argument that disagrees is refused (edit data.json first).
#
# Labels the hub namespace jovial-guard.io/guarded=true (the webhooks' namespaceSelector;
# KubeSpawner labels per-user namespaces the same way) and the webhook's namespace for Pod
# Security "restricted". The chart creates the webhook configurations only once the webhook
# is ready, and renews its serving certificate on upgrade: rerun this script to upgrade.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA="$HERE/../policies/data.json"
RELEASE="${JOVIAL_GUARD_RELEASE:-jovial-guard}"
WEBHOOK_NS="${JOVIAL_GUARD_NAMESPACE:-jovial-guard}"
read -r HUB_NS HUB_SA < <(python3 -c 'import json, sys; h = json.load(open(sys.argv[1]))["settings"]["hub"]; print(h["namespace"], h["service_account"])' "$DATA")
if [ "$#" -ge 1 ] && [ "${1#-}" = "$1" ]; then
  if [ "$1" != "$HUB_NS" ]; then
    echo "install.sh: policies/data.json trusts the hub service account system:serviceaccount:$HUB_NS:$HUB_SA," >&2
    echo "  but you asked for namespace '$1'. Set settings.hub.namespace in policies/data.json to '$1'" >&2
    echo "  (the chart passes it to the policy as data), then rerun." >&2
    exit 2
  fi
  shift
fi
echo "hub identity: system:serviceaccount:$HUB_NS:$HUB_SA (from policies/data.json)"
kubectl create namespace "$WEBHOOK_NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$WEBHOOK_NS" pod-security.kubernetes.io/enforce=restricted --overwrite
kubectl create namespace "$HUB_NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$HUB_NS" jovial-guard.io/guarded=true --overwrite
helm upgrade --install "$RELEASE" "$HERE/helm/jovial-guard" --namespace "$WEBHOOK_NS" \
  --set "hub.namespace=$HUB_NS" --set "hub.serviceAccount=$HUB_SA" --wait --timeout 10m "$@"
