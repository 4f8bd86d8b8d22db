#!/usr/bin/env bash
# First-run times of the README's two commands, as a new user meets them: a fresh clone of
# this repository, an empty cache (JOVIAL_GUARD_CACHE) and an empty state directory.
#
#   bench/first_run.sh up     time from `./guard up` to the hub's login page, then SIGTERM
#   bench/first_run.sh test   time of `./guard test` (set-up, builds and the whole suite)
#
# System packages already installed and the Go module cache (~/go/pkg/mod) are not emptied:
# the last line says how full the module cache was, since it decides the Go builds' times.
set -euo pipefail
what="${1:?usage: bench/first_run.sh up|test}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/var/tmp}/jovial-guard-first-run.XXXXXX")"
git clone -q "$HERE" "$work/clone"
export JOVIAL_GUARD_CACHE="$work/cache"
mods="$(du -sm "$(go env GOMODCACHE 2>/dev/null || echo ~/go/pkg/mod)" 2>/dev/null | cut -f1 || echo 0)"
cd "$work/clone"
start=$SECONDS
case "$what" in
  up)
    export JOVIAL_GUARD_STATE_DIR="$work/state"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    ./guard up --port "$port" --hub-port $((port + 1)) --proxy-api-port $((port + 2)) \
      --engine-socket "$work/podman.sock" --netns-prefix jfr --egress-pool 10.151.0.0/16 \
      >"$work/up.log" 2>&1 &
    pid=$!
    until curl -fs "http://127.0.0.1:$port/hub/login" | grep -q 'name="password"'; do
      kill -0 "$pid" 2>/dev/null || { tail -40 "$work/up.log"; echo "first_run: up failed" >&2; exit 1; }
      sleep 2
    done
    elapsed=$((SECONDS - start))
    kill -TERM "$pid"; wait "$pid" || true
    grep -E '^(==>|[a-z -]+:.*(first run|done in))' "$work/up.log" | cut -c1-160
    echo "first_run: command=up login_page_s=$elapsed go_module_cache_mb=$mods log=$work/up.log"
    ;;
  test)
    rc=0
    ./guard test -q >"$work/test.log" 2>&1 || rc=$?
    elapsed=$((SECONDS - start))
    tail -3 "$work/test.log"
    echo "first_run: command=test total_s=$elapsed rc=$rc go_module_cache_mb=$mods log=$work/test.log"
    ;;
  *) echo "usage: bench/first_run.sh up|test" >&2; exit 2 ;;
esac
