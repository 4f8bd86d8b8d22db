#!/usr/bin/env bash
# The pod sandbox ("pause") image for the single-node test cluster, without a registry:
# build/pause/linux/pause.c from the k8s.io/kubernetes module (the Go module proxy), compiled
# with gcc -static, wrapped by podman (in a throw-away storage) into a docker-archive that the
# cluster fixture imports with `ctr images import`. Cached by Kubernetes version under
# $JOVIAL_GUARD_CACHE/tools/pause/<version>/pause.tar. Tests only.
set -euo pipefail
KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
CACHE="${JOVIAL_GUARD_CACHE:-$HOME/.cache/jovial_guard}"
DEST="$CACHE/tools/pause/$KUBE_VERSION"
IMAGE="localhost/jovial-guard/pause:$KUBE_VERSION"

if [ -s "$DEST/pause.tar" ]; then
  echo "pause image $IMAGE: cached at $DEST/pause.tar"
  exit 0
fi
if [ "${JOVIAL_GUARD_SKIP_KUBE_NODE:-0}" = "1" ]; then
  echo "pause image: not cached and JOVIAL_GUARD_SKIP_KUBE_NODE=1; skipping the build"
  exit 0
fi
for tool in go gcc podman; do
  command -v "$tool" >/dev/null || { echo "55-pause-image: '$tool' is required" >&2; exit 2; }
done
mkdir -p "$DEST"
exec 9>"$DEST/.lock"
flock 9
[ -s "$DEST/pause.tar" ] && exit 0
work="$(mktemp -d "${TMPDIR:-/var/tmp}/jovial-guard-pause.XXXXXX")"
trap 'podman --root "$work/root" --runroot "$work/run" --storage-driver vfs rmi -a -f >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
kdir="$(cd "$work" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
src="$kdir/build/pause/linux/pause.c"
[ -f "$src" ] || { echo "55-pause-image: $src not found in k8s.io/kubernetes@$KUBE_VERSION" >&2; exit 3; }
mkdir -p "$work/rootfs"
gcc -Os -static -DVERSION="$KUBE_VERSION" -o "$work/rootfs/pause" "$src"
strip "$work/rootfs/pause"
tar -C "$work/rootfs" -cf "$work/rootfs.tar" pause
p=(podman --root "$work/root" --runroot "$work/run" --storage-driver vfs --tmpdir "$work")
"${p[@]}" import --quiet --change 'ENTRYPOINT=["/pause"]' --change 'USER=65535:65535' "$work/rootfs.tar" "$IMAGE" >/dev/null
"${p[@]}" save --quiet --format docker-archive -o "$DEST/pause.tar.tmp" "$IMAGE"
mv "$DEST/pause.tar.tmp" "$DEST/pause.tar"
echo "pause image $IMAGE: built at $DEST/pause.tar"
