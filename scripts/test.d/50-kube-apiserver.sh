#!/usr/bin/env bash
# Build a real kube-apiserver from the Go module proxy, cached by version.
#
# Why a build: only package registries are reachable, and Debian ships no kube-apiserver.
# k8s.io/kubernetes is served by the Go module proxy, but its go.mod replaces every staging
# module (k8s.io/api, apimachinery, apiserver, client-go, ...) with ./staging/src/..., which a
# consumer cannot resolve. So a tiny module requires k8s.io/kubernetes vX.Y.Z and pins every
# one of those staging modules to the matching v0.Y.Z release; its main runs the upstream
# app.NewAPIServerCommand(), i.e. exactly kube-apiserver's own command.
#
# The staging list is read from kubernetes' own go.mod (its replace block), so a version bump
# is one variable. The result lands in $JOVIAL_GUARD_CACHE/tools/kube-apiserver/<version>/ and
# is linked into the checkout's .tools/bin; a cached run takes well under a second.
#
# The first build takes ~10-20 minutes on 2 cores (tests only: `./guard up` never builds it).
# JOVIAL_GUARD_SKIP_KUBE_APISERVER=1 skips building it and switches the API server e2e off
# explicitly; without it, a missing binary fails that test.
set -euo pipefail
# shellcheck source=../lib/progress.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/progress.sh"

KUBE_VERSION="${KUBE_APISERVER_VERSION:-v1.37.2}"
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"
CACHE="${JOVIAL_GUARD_CACHE:-$HOME/.cache/jovial_guard}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$CACHE/tools/kube-apiserver/$KUBE_VERSION"
BIN="$DEST/kube-apiserver"
PARALLEL="${KUBE_APISERVER_BUILD_P:-2}"

link_into_checkout() {
  mkdir -p "$HERE/.tools/bin"
  ln -sfn "$(readlink -f "$BIN")" "$HERE/.tools/bin/kube-apiserver"
}

if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
  link_into_checkout
  echo "kube-apiserver $KUBE_VERSION: cached at $BIN"
  exit 0
fi

if [ "${JOVIAL_GUARD_SKIP_KUBE_APISERVER:-0}" = "1" ]; then
  echo "kube-apiserver $KUBE_VERSION: not cached and JOVIAL_GUARD_SKIP_KUBE_APISERVER=1; skipping the build"
  exit 0
fi

command -v go >/dev/null || { echo "50-kube-apiserver: 'go' is required to build kube-apiserver" >&2; exit 2; }
mkdir -p "$DEST"
work="$DEST/src"
rm -rf "$work"
mkdir -p "$work"
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0

# kubernetes' own go.mod names the staging modules in its replace block.
kmod="$(cd "$work" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
[ -f "$kmod" ] || { echo "50-kube-apiserver: could not fetch k8s.io/kubernetes@$KUBE_VERSION go.mod" >&2; exit 3; }
gover="$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$kmod" | head -1)"
staging="$(grep -E '=>[[:space:]]+\./staging/src/' "$kmod" | awk '{print $1}' | sort -u)"
[ -n "$staging" ] || { echo "50-kube-apiserver: no staging replace block found in $kmod" >&2; exit 3; }

{
  echo "module jovialguard.local/kube-apiserver"
  echo
  echo "go $gover"
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  for m in $staging; do echo "	$m => $m $STAGING_VERSION"; done
  echo ")"
} >"$work/go.mod"

cat >"$work/main.go" <<'GO'
// kube-apiserver, built from the upstream app package unchanged.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	command := app.NewAPIServerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
GO

cd "$work"
with_progress "kube-apiserver $KUBE_VERSION: resolving modules" "1-3 min" "$DEST/go-mod-tidy.log" \
  go mod tidy || exit 4
with_progress "kube-apiserver $KUBE_VERSION: compiling (tests only)" "10-17 min" "$DEST/go-build.log" \
  go build -p "$PARALLEL" -trimpath -ldflags "-s -w \
    -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)" \
    -o "$BIN.tmp" . || exit 5
cd "$HERE"
mv "$BIN.tmp" "$BIN"
"$BIN" --version
link_into_checkout
echo "kube-apiserver $KUBE_VERSION: built at $BIN"
