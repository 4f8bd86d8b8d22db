#!/usr/bin/env bash
# kubelet for the single-node test cluster (the node agent of the test cluster: runs pods
# through containerd), built from k8s.io/kubernetes through the Go module proxy and cached by
# version (the recipe and its reasons: scripts/lib/kube-build.sh). Tests only: `./guard up`
# never builds it.
# JOVIAL_GUARD_SKIP_KUBE_NODE=1 skips building it and switches the node tests off explicitly;
# without it, a missing binary fails them.
set -euo pipefail
# shellcheck source=../lib/kube-build.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/kube-build.sh"

kube_cached kubelet && exit 0
if [ "${JOVIAL_GUARD_SKIP_KUBE_NODE:-0}" = "1" ]; then
  echo "kubelet $KUBE_VERSION: not cached and JOVIAL_GUARD_SKIP_KUBE_NODE=1; skipping the build"
  exit 0
fi
kube_component kubelet cmd/kubelet/kubelet.go "4-6 min"
