#!/usr/bin/env bash
# py-spy (sampling profiler, a wheel from PyPI) for profiling the webhook and the hub under
# the benchmarks: `py-spy record --pid PID` or `py-spy top --pid PID`. Installed into its
# own prefix, cached by version; the project's venv does not carry it.
# JOVIAL_GUARD_SKIP_PY_SPY=1 skips it.
set -euo pipefail
# shellcheck source=../lib/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/tools.sh"
PY_SPY_VERSION="${PY_SPY_VERSION:-0.4.3}"
CACHE="${JOVIAL_GUARD_CACHE:-$HOME/.cache/jovial_guard}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$CACHE/tools/py-spy/$PY_SPY_VERSION"
BIN="$DEST/bin/py-spy"

use_cached_tool "$HERE" "$BIN" py-spy "$PY_SPY_VERSION" --version && exit 0
if [ "${JOVIAL_GUARD_SKIP_PY_SPY:-0}" = "1" ]; then
  echo "py-spy $PY_SPY_VERSION: skipped"
  exit 0
fi
rm -rf "$DEST"
mkdir -p "$DEST"
if python3 -m pip install -q --disable-pip-version-check --no-deps --prefix "$DEST" "py-spy==$PY_SPY_VERSION" >"$DEST/pip.log" 2>&1 \
  && [ -x "$BIN" ]; then
  link_tool "$HERE" "$BIN"
  echo "py-spy $PY_SPY_VERSION: installed at $BIN"
else
  echo "py-spy $PY_SPY_VERSION: install failed (see $DEST/pip.log); profiling needs it, the benchmarks do not" >&2
fi
