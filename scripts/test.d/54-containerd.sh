#!/usr/bin/env bash
# containerd, its runc shim and ctr for the single-node test cluster, built through the Go
# module proxy and cached by version under $JOVIAL_GUARD_CACHE/tools/containerd/<version>/.
#
# Why a build: Debian's containerd is 1.6, which the kubelet marks as losing support; only
# package registries are reachable. CGO_ENABLED=0 with the btrfs, zfs and devmapper
# snapshotters left out (they need C headers; the cluster uses overlayfs). runc comes from
# Debian (scripts/install-system.sh test). Tests only: `./guard up` never builds it.
# JOVIAL_GUARD_SKIP_KUBE_NODE=1 skips building it and switches the node tests off explicitly.
set -euo pipefail
# shellcheck source=../lib/progress.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/progress.sh"
# shellcheck source=../lib/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/tools.sh"

VERSION="${CONTAINERD_VERSION:-v2.4.2}"
CACHE="${JOVIAL_GUARD_CACHE:-$HOME/.cache/jovial_guard}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$CACHE/tools/containerd/$VERSION"
TOOLS=(containerd containerd-shim-runc-v2 ctr)

cached() {
  [ -x "$DEST/bin/containerd" ] && [ -x "$DEST/bin/containerd-shim-runc-v2" ] && [ -x "$DEST/bin/ctr" ] \
    && "$DEST/bin/containerd" --version >/dev/null 2>&1 || return 1
  local tool
  for tool in "${TOOLS[@]}"; do link_tool "$HERE" "$DEST/bin/$tool"; done
  echo "containerd $VERSION: cached at $DEST/bin"
}

cached && exit 0
if [ "${JOVIAL_GUARD_SKIP_KUBE_NODE:-0}" = "1" ]; then
  echo "containerd $VERSION: not cached and JOVIAL_GUARD_SKIP_KUBE_NODE=1; skipping the build"
  exit 0
fi
command -v go >/dev/null || { echo "54-containerd: 'go' is required to build containerd" >&2; exit 2; }
mkdir -p "$DEST"
exec 9>"$DEST/.lock"
flock 9
cached && exit 0
rm -rf "$DEST/bin.tmp"
mkdir -p "$DEST/bin.tmp"
pkgs=()
for tool in "${TOOLS[@]}"; do pkgs+=("github.com/containerd/containerd/v2/cmd/$tool@$VERSION"); done
with_progress "containerd $VERSION: compiling (tests only)" "3-5 min" "$DEST/go-build.log" \
  env GOBIN="$DEST/bin.tmp" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
  nice go install -p "${KUBE_BUILD_P:-2}" -trimpath -tags "no_btrfs no_zfs no_devmapper" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$VERSION" "${pkgs[@]}" || exit 5
rm -rf "$DEST/bin"
mv "$DEST/bin.tmp" "$DEST/bin"
"$DEST/bin/containerd" --version
cached
