#!/usr/bin/env bash
# A real kube-apiserver for the API server e2e and the node cluster, built from the Go
# module proxy and cached by version (the recipe and its reasons: scripts/lib/kube-build.sh).
#
# The first build takes ~10-20 minutes on 2 cores (tests only: `./guard up` never builds it).
# JOVIAL_GUARD_SKIP_KUBE_APISERVER=1 skips building it and switches the API server e2e off
# explicitly; without it, a missing binary fails that test.
set -euo pipefail
KUBE_VERSION="${KUBE_APISERVER_VERSION:-v1.37.2}"
KUBE_BUILD_P="${KUBE_APISERVER_BUILD_P:-2}"
# shellcheck source=../lib/kube-build.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/kube-build.sh"

kube_cached kube-apiserver && exit 0
if [ "${JOVIAL_GUARD_SKIP_KUBE_APISERVER:-0}" = "1" ]; then
  echo "kube-apiserver $KUBE_VERSION: not cached and JOVIAL_GUARD_SKIP_KUBE_APISERVER=1; skipping the build"
  exit 0
fi
kube_component kube-apiserver cmd/kube-apiserver/apiserver.go "10-17 min"
