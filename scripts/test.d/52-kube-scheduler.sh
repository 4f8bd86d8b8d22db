#!/usr/bin/env bash
# kube-scheduler for the single-node test cluster (places the test cluster's pods on its
# node), built from k8s.io/kubernetes through the Go module proxy and cached by version (the
# recipe and its reasons: scripts/lib/kube-build.sh). Tests only: `./guard up` never builds
# it.
# JOVIAL_GUARD_SKIP_KUBE_NODE=1 skips building it and switches the node tests off explicitly;
# without it, a missing binary fails them.
set -euo pipefail
# shellcheck source=../lib/kube-build.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/kube-build.sh"

kube_cached kube-scheduler && exit 0
if [ "${JOVIAL_GUARD_SKIP_KUBE_NODE:-0}" = "1" ]; then
  echo "kube-scheduler $KUBE_VERSION: not cached and JOVIAL_GUARD_SKIP_KUBE_NODE=1; skipping the build"
  exit 0
fi
kube_component kube-scheduler cmd/kube-scheduler/scheduler.go "1-2 min"
