#!/usr/bin/env bash
# The engine's OCI runtime: runc at a pinned version (jovial_guard/runtime/runc.py says why
# Debian's 1.1.5 cannot exec into user-namespaced notebooks), built with cgo and seccomp
# through the Go module proxy, cached under $JOVIAL_GUARD_CACHE/tools/runc/<version>/.
set -euo pipefail
# shellcheck source=../lib/progress.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/progress.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if python3 -c 'import sys; from jovial_guard.runtime.runc import runc_path; runc_path()' 2>/dev/null; then
  exec python3 -m jovial_guard.runtime.runc
fi
CACHE="${JOVIAL_GUARD_CACHE:-$HOME/.cache/jovial_guard}"
mkdir -p "$CACHE/tools/runc"
with_progress "runc: compiling with seccomp" "1-3 min" "$CACHE/tools/runc/setup.log" \
  python3 -m jovial_guard.runtime.runc || exit 5
python3 -m jovial_guard.runtime.runc
