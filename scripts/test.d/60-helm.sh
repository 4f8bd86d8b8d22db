#!/usr/bin/env bash
# Build helm (v3) through the Go module proxy, cached by version. Test-only: the chart tests
# render zero-to-jupyterhub's Helm chart (tests/vectors/z2jh/) with it.
#
# The result lands in $JOVIAL_GUARD_CACHE/tools/helm/<version>/helm and is linked into the
# checkout's .tools/bin; a cached run takes well under a second.
set -euo pipefail
# shellcheck source=../lib/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/tools.sh"

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${JOVIAL_GUARD_CACHE:-$HOME/.cache/jovial_guard}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$CACHE/tools/helm/$HELM_VERSION"
BIN="$DEST/helm"

use_cached_tool "$HERE" "$BIN" helm "$HELM_VERSION" version --short && exit 0

command -v go >/dev/null || { echo "60-helm: 'go' is required to build helm" >&2; exit 2; }
mkdir -p "$DEST"
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
echo "helm $HELM_VERSION: building through the Go module proxy (a few minutes the first time)..."
tmpbin="$(mktemp -d "$DEST/bin.XXXXXX")"
trap 'rm -rf "$tmpbin"' EXIT
GOBIN="$tmpbin" nice go install -p "${HELM_BUILD_P:-2}" -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$DEST/go-build.log" 2>&1 \
  || { tail -50 "$DEST/go-build.log" >&2; exit 5; }
[ -x "$tmpbin/helm" ] || { echo "60-helm: go install produced no helm binary (see $DEST/go-build.log)" >&2; exit 5; }
mv -f "$tmpbin/helm" "$BIN"
"$BIN" version --short
link_tool "$HERE" "$BIN"
echo "helm $HELM_VERSION: built at $BIN"
