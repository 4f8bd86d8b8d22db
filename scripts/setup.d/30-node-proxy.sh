#!/usr/bin/env bash
# configurable-http-proxy (JupyterHub's proxy) from npm, pinned, installed into the cache and
# linked into the checkout's .tools/bin. Node comes from Debian (install-system.sh); CHP
# warns that Node < 22.12 is old but runs on Node 20. Idempotent: a second run only relinks.
set -euo pipefail
# shellcheck source=../lib/progress.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/progress.sh"
# shellcheck source=../lib/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/tools.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
VERSION=5.3.0
CACHE="${JOVIAL_GUARD_CACHE:-$HOME/.cache/jovial_guard}"
PREFIX="$CACHE/tools/chp/$VERSION"
BIN="$PREFIX/node_modules/.bin/configurable-http-proxy"
if ! command -v npm >/dev/null 2>&1; then
  echo "node-proxy: npm is missing; run scripts/install-system.sh (nodejs, npm)" >&2
  exit 2
fi
if [ ! -x "$BIN" ] || [ ! -f "$PREFIX/.complete" ]; then
  rm -rf "$PREFIX"
  mkdir -p "$PREFIX"
  with_progress "node-proxy: installing configurable-http-proxy@$VERSION from npm" "20 s" "$PREFIX/npm.log" \
    npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "configurable-http-proxy@$VERSION"
  touch "$PREFIX/.complete"
else
  echo "node-proxy: configurable-http-proxy@$VERSION cached"
fi
link_tool "$PWD" "$BIN"
