# shellcheck shell=bash
# Shared by the set-up steps that keep a tool in the cache by version and link it into a
# checkout's .tools/bin. The link resolves to the real file, so a checkout never reaches a
# tool through another checkout's links.

# link_tool CHECKOUT BIN [NAME]: link BIN as CHECKOUT/.tools/bin/NAME (default: BIN's name).
link_tool() {
  local checkout="$1" bin="$2" name="${3:-$(basename "$2")}"
  mkdir -p "$checkout/.tools/bin"
  ln -sfn "$(readlink -f "$bin")" "$checkout/.tools/bin/$name"
}

# use_cached_tool CHECKOUT BIN NAME VERSION CHECK-ARG...: when BIN exists and runs with
# CHECK-ARGs, link it and say so; status 1 when it has to be built.
use_cached_tool() {
  local checkout="$1" bin="$2" name="$3" version="$4"
  shift 4
  { [ -x "$bin" ] && "$bin" "$@" >/dev/null 2>&1; } || return 1
  link_tool "$checkout" "$bin" "$name"
  echo "$name $version: cached at $bin"
}
