#!/usr/bin/env bash
# Build the admission webhook's root filesystem as a tarball, without a registry.
#
#   images/webhook/build.sh OUT.tar CONSTRAINTS.txt OPA_BINARY
#
# debootstrap (minbase, bookworm, from the mirror apt already uses) + a python venv in
# /opt/jovial-guard/venv holding only the dependencies of `jovial_guard[webhook]` (no
# JupyterHub, no spawners), pinned to CONSTRAINTS.txt; the project's code, policies and
# profiles in /opt/jovial-guard/app (precompiled, so a read-only root never needs a write);
# OPA beside it (/usr/local/bin/opa) for the sidecar. A non-root user 65532, no
# setuid/setgid bits, no package caches, documentation or build-host traces.
# Needs root (debootstrap, chroot). Progress goes to stdout as "==> step" lines.
set -euo pipefail
OUT="${1:?usage: build.sh OUT.tar CONSTRAINTS.txt OPA_BINARY}"
CONSTRAINTS="${2:?constraints file (pip freeze of the tested venv)}"
OPA="${3:?opa binary}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SUITE=bookworm
PREFIX=/opt/jovial-guard
UID_=65532

step() { printf '==> %s\n' "$*"; }

mirror="${JOVIAL_GUARD_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' \
             | awk -v s="$SUITE" '$2 == s && $3 == "main" {print $1; exit}')"
fi
[ -n "$mirror" ] || { echo "build.sh: no Debian $SUITE mirror configured for apt; set JOVIAL_GUARD_DEBIAN_MIRROR" >&2; exit 2; }

work="$(mktemp -d "$(dirname "$OUT")/.build-XXXXXX")"
root="$work/rootfs"
cleanup() {
  { findmnt -rn -o TARGET | grep -F "$root/" | sort -r | while read -r m; do umount -l "$m"; done; } || true
  rm -rf --one-file-system "$work" || true
}
trap cleanup EXIT

step "debootstrap $SUITE (minbase) from the configured mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

step "venv $PREFIX/venv: the [webhook] extra's dependencies, pinned"
python3 "$HERE/requirements.py" webhook >"$root/tmp/requirements.txt"
grep -v -i '^jovial[-_]guard' "$CONSTRAINTS" | grep -v '^-e ' >"$root/tmp/constraints.txt"
cp /etc/ssl/certs/ca-certificates.crt "$root/tmp/host-ca.crt"
in_root() { env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
              HOME=/root LANG=C.UTF-8 chroot "$root" "$@"; }
in_root python3 -m venv "$PREFIX/venv"
in_root "$PREFIX/venv/bin/pip" install --no-cache-dir --disable-pip-version-check -q \
  --cert /tmp/host-ca.crt --only-binary=:all: -c /tmp/constraints.txt -r /tmp/requirements.txt
in_root "$PREFIX/venv/bin/pip" check

step "the project's code, policies and profiles in $PREFIX/app"
mkdir -p "$root$PREFIX/app"
( cd "$REPO" && tar --exclude='__pycache__' --exclude='*.pyc' -cf - jovial_guard policies profiles pyproject.toml ) \
  | tar -C "$root$PREFIX/app" -xf -
# The venv finds the code through a .pth file: `python -m jovial_guard` works from any directory.
echo "$PREFIX/app" >"$(echo "$root$PREFIX/venv/lib/python3"*/site-packages)/jovial_guard_app.pth"
in_root "$PREFIX/venv/bin/python" -m compileall -q "$PREFIX/app/jovial_guard" "$PREFIX/venv/lib"
cat >"$root/usr/local/bin/jovial-guard" <<SH
#!/bin/sh
exec $PREFIX/venv/bin/python -m jovial_guard "\$@"
SH
chmod 0755 "$root/usr/local/bin/jovial-guard"
install -m 0755 "$OPA" "$root/usr/local/bin/opa"
# Debug symbols are not needed at run time (OPA's alone are ~20 MB).
if command -v strip >/dev/null; then
  strip --strip-unneeded "$root/usr/local/bin/opa"
  find "$root$PREFIX/venv" -name '*.so' -exec strip --strip-unneeded {} +
fi

in_root "$PREFIX/venv/bin/python" -c "import jovial_guard.admission.server, jovial_guard.policy.check_cli"

step "non-root user $UID_, hardening, slimming, scrubbing host details"
in_root groupadd --gid "$UID_" guard
in_root useradd --uid "$UID_" --gid "$UID_" --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin guard
# pip is not needed at run time (nothing is installed in a running webhook).
rm -rf "$root$PREFIX/venv/lib/python3"*/site-packages/pip "$root$PREFIX/venv/lib/python3"*/site-packages/pip-* \
       "$root$PREFIX/venv/bin/pip"* "$root/usr/lib/python3"*/ensurepip "$root/usr/share/python-wheels"
rm -f "$root/tmp/host-ca.crt" "$root/tmp/requirements.txt" "$root/tmp/constraints.txt"
find "$root" -xdev -perm /6000 -exec chmod ug-s {} +
rm -rf "$root/var/cache/apt/"* "$root/var/lib/apt/lists/"* "$root/var/log/"* "$root/root/.cache" "$root/debootstrap" \
       "$root/usr/share/doc/"* "$root/usr/share/man/"* "$root/usr/share/info/"* "$root/usr/share/locale/"*
printf 'deb http://deb.debian.org/debian %s main\n' "$SUITE" >"$root/etc/apt/sources.list"
: >"$root/etc/resolv.conf"
echo webhook >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$root/etc/hosts"
find "$root/tmp" "$root/var/tmp" -mindepth 1 -delete

left="$(find "$root" -xdev -perm /6000 | wc -l)"
[ "$left" -eq 0 ] || { echo "build.sh: setuid/setgid files remain" >&2; exit 1; }
for forbidden in jupyterhub dockerspawner kubespawner; do
  if ls "$root$PREFIX/venv/lib/python3"*/site-packages | grep -qi "^$forbidden"; then
    echo "build.sh: $forbidden in the webhook image" >&2; exit 1
  fi
done

step "packing root filesystem"
tar --numeric-owner --xattrs -C "$root" -cpf "$work/rootfs.tar" .
mv "$work/rootfs.tar" "$OUT"
step "built $(du -h "$OUT" | cut -f1) $OUT"
