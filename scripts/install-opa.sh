#!/usr/bin/env bash
# Install a pinned OPA through the Go module proxy, cached outside the checkout.
#
# Why a build and not a download: only package registries are reachable here, so the
# binary is compiled from the module. `go install` of OPA's main package is tried first;
# when it refuses (replace directives in OPA's go.mod), a two-line main that imports OPA's
# `cmd` package is built instead. The result is cached by version under
# $JOVIAL_GUARD_CACHE/tools/opa/<version>/opa and linked into the checkout's .tools/bin,
# so a second run takes well under a second.
set -euo pipefail
# shellcheck source=lib/progress.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/progress.sh"
# shellcheck source=lib/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/tools.sh"

OPA_VERSION="${OPA_VERSION:-v1.22.3}"
CACHE="${JOVIAL_GUARD_CACHE:-$HOME/.cache/jovial_guard}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$CACHE/tools/opa/$OPA_VERSION"
BIN="$DEST/opa"

use_cached_tool "$HERE" "$BIN" opa "$OPA_VERSION" version && exit 0

command -v go >/dev/null || { echo "install-opa: 'go' is required to build OPA" >&2; exit 2; }
mkdir -p "$DEST"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
if ! with_progress "opa $OPA_VERSION: building through the Go module proxy" "1-3 min" "$DEST/go-install.log" \
     env GOBIN="$DEST" CGO_ENABLED=0 go install "github.com/open-policy-agent/opa@$OPA_VERSION"; then
  echo "opa: go install refused (see $DEST/go-install.log); building a main that imports OPA's cmd package"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  cat >"$work/main.go" <<'GO'
package main

import (
	"os"

	"github.com/open-policy-agent/opa/cmd"
)

func main() {
	if err := cmd.RootCommand.Execute(); err != nil {
		os.Exit(1)
	}
}
GO
  (cd "$work" && go mod init jovial_guard/opa >/dev/null 2>&1 \
     && go get "github.com/open-policy-agent/opa@$OPA_VERSION" \
     && CGO_ENABLED=0 go build -o "$BIN" .)
fi
# sed reads all of it: `| head` would end opa with SIGPIPE, which pipefail turns into a failure.
"$BIN" version | sed -n 1p
link_tool "$HERE" "$BIN"
echo "opa $OPA_VERSION: installed at $BIN"
