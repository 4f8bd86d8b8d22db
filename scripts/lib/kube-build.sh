# shellcheck shell=bash
# Build one component of k8s.io/kubernetes (kube-apiserver, kubelet, kube-scheduler,
# kube-controller-manager) through the Go module proxy, cached by version.
#
# Why a build: only package registries are reachable, and Debian ships none of these.
# k8s.io/kubernetes is served by the Go module proxy, but its go.mod replaces every staging
# module (k8s.io/api, apimachinery, apiserver, client-go, ...) with ./staging/src/..., which a
# consumer cannot resolve. So a tiny module requires k8s.io/kubernetes vX.Y.Z and pins every
# one of those staging modules to the matching v0.Y.Z release; its main is the component's
# upstream main file (cmd/NAME/*.go in the same module), unchanged.
#
# The staging list is read from kubernetes' own go.mod (its replace block), so a version bump
# is one variable. The binary lands in $JOVIAL_GUARD_CACHE/tools/NAME/<version>/NAME and is
# linked into the checkout's .tools/bin; a cached run takes well under a second. Components
# share Go's build cache, so the second one compiles only what it adds.
#
#   kube_component NAME MAIN ESTIMATE   e.g. kube_component kubelet cmd/kubelet/kubelet.go "4-6 min"
# Exit status: 0 built or cached, 2 no Go, 3 module metadata unusable, 4 tidy, 5 compile.

# shellcheck source=progress.sh
. "$(dirname "${BASH_SOURCE[0]}")/progress.sh"
# shellcheck source=tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
KUBE_BUILD_P="${KUBE_BUILD_P:-2}"
JG_CACHE="${JOVIAL_GUARD_CACHE:-$HOME/.cache/jovial_guard}"
JG_CHECKOUT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# kube_cached NAME: link and report a usable cached binary; status 1 when there is none.
kube_cached() {
  use_cached_tool "$JG_CHECKOUT" "$JG_CACHE/tools/$1/$KUBE_VERSION/$1" "$1" "$KUBE_VERSION" --version
}

# kube_staging_gomod MODULE_NAME KUBERNETES_GOMOD: a go.mod requiring k8s.io/kubernetes with
# every staging module pinned to its release, on stdout.
kube_staging_gomod() {
  local modname="$1" kmod="$2" gover staging m
  gover="$(sed -n '/^go /{s/^go \([0-9.]*\).*/\1/p;q}' "$kmod")"
  staging="$(grep -E '=>[[:space:]]+\./staging/src/' "$kmod" | awk '{print $1}' | sort -u)"
  [ -n "$staging" ] || { echo "kube-build: no staging replace block found in $kmod" >&2; return 3; }
  echo "module $modname"
  echo
  echo "go $gover"
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  for m in $staging; do echo "	$m => $m v0.${KUBE_VERSION#v1.}"; done
  echo ")"
}

kube_component() {
  local name="$1" main="$2" estimate="$3"
  local dest="$JG_CACHE/tools/$name/$KUBE_VERSION"
  local bin="$dest/$name" work="$dest/src" kmod kdir
  kube_cached "$name" && return 0
  command -v go >/dev/null || { echo "kube-build: 'go' is required to build $name" >&2; return 2; }
  mkdir -p "$dest"
  # Parallel set-ups (several checkouts, one cache) build once: the others wait, then link.
  exec 9>"$dest/.lock"
  flock 9
  if kube_cached "$name"; then exec 9>&-; return 0; fi
  rm -rf "$work"
  mkdir -p "$work"
  export GOFLAGS="-mod=mod -buildvcs=false"
  export CGO_ENABLED=0
  kmod="$(cd "$work" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  kdir="$(cd "$work" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
  [ -f "$kmod" ] && [ -f "$kdir/$main" ] || {
    echo "kube-build: could not fetch k8s.io/kubernetes@$KUBE_VERSION (go.mod or $main)" >&2; return 3; }
  kube_staging_gomod "jovialguard.local/$name" "$kmod" >"$work/go.mod" || return 3
  cp "$kdir/$main" "$work/main.go"
  chmod u+w "$work/main.go"
  (
    cd "$work"
    with_progress "$name $KUBE_VERSION: resolving modules" "1-3 min" "$dest/go-mod-tidy.log" \
      go mod tidy || exit 4
    with_progress "$name $KUBE_VERSION: compiling (tests only)" "$estimate" "$dest/go-build.log" \
      nice go build -p "$KUBE_BUILD_P" -trimpath -ldflags "-s -w \
        -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
        -X k8s.io/component-base/version.gitMajor=1 \
        -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)" \
        -o "$bin.tmp" . || exit 5
  ) || return $?
  mv "$bin.tmp" "$bin"
  "$bin" --version
  exec 9>&-
  kube_cached "$name" >/dev/null
  echo "$name $KUBE_VERSION: built at $bin"
}
