#!/usr/bin/env bash
# vegeta (constant-rate HTTP load generator) for bench/admission.py's open-loop runs,
# built from the Go module proxy and cached by version; a cached run takes < 1 s.
# Only the benchmark uses it (tests do not); JOVIAL_GUARD_SKIP_VEGETA=1 skips it.
set -euo pipefail
# shellcheck source=../lib/progress.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/progress.sh"
# shellcheck source=../lib/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/tools.sh"
VEGETA_VERSION="${VEGETA_VERSION:-v12.13.0}"
CACHE="${JOVIAL_GUARD_CACHE:-$HOME/.cache/jovial_guard}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$CACHE/tools/vegeta/$VEGETA_VERSION"
BIN="$DEST/vegeta"

use_cached_tool "$HERE" "$BIN" vegeta "$VEGETA_VERSION" -version && exit 0
if [ "${JOVIAL_GUARD_SKIP_VEGETA:-0}" = "1" ] || ! command -v go >/dev/null; then
  echo "vegeta $VEGETA_VERSION: not built (skipped or no go); bench/admission.py then uses only its Python generator"
  exit 0
fi
mkdir -p "$DEST"
if with_progress "vegeta $VEGETA_VERSION: building (benchmarks only)" "30 s" "$DEST/go-install.log" \
     env GOBIN="$DEST" CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install "github.com/tsenart/vegeta/v12@$VEGETA_VERSION"; then
  link_tool "$HERE" "$BIN"
  echo "vegeta $VEGETA_VERSION: built at $BIN"
else
  echo "vegeta $VEGETA_VERSION: build failed (see $DEST/go-install.log); the benchmark falls back to its Python generator" >&2
fi
