#!/usr/bin/env bash
# kube-controller-manager for the single-node test cluster (lifts the node's not-ready taint,
# creates each namespace's ServiceAccount and kube-root-ca.crt), built from k8s.io/kubernetes
# through the Go module proxy and cached by version (the recipe and its reasons:
# scripts/lib/kube-build.sh). Tests only: `./guard up` never builds it.
# JOVIAL_GUARD_SKIP_KUBE_NODE=1 skips building it and switches the node tests off explicitly;
# without it, a missing binary fails them.
set -euo pipefail
# shellcheck source=../lib/kube-build.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/kube-build.sh"

kube_cached kube-controller-manager && exit 0
if [ "${JOVIAL_GUARD_SKIP_KUBE_NODE:-0}" = "1" ]; then
  echo "kube-controller-manager $KUBE_VERSION: not cached and JOVIAL_GUARD_SKIP_KUBE_NODE=1; skipping the build"
  exit 0
fi
kube_component kube-controller-manager cmd/kube-controller-manager/controller-manager.go "4-8 min"
