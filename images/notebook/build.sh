#!/usr/bin/env bash
# Build the hardened single-user notebook root filesystem as a tarball, without a registry.
#
#   images/notebook/build.sh OUT.tar
#
# debootstrap (minbase, bookworm, from the mirror apt already uses) + python3 venv in
# /opt/notebook with the pinned packages of requirements.txt. Then hardening: a non-root
# user jovyan (uid 1000), no setuid/setgid bits anywhere, no package caches, and no trace
# of the build host (mirror address, resolv.conf, hostname, bootstrap log, pip cache).
# Needs root (debootstrap, chroot). Progress goes to stdout as "==> step" lines.
set -euo pipefail
OUT="${1:?usage: build.sh OUT.tar}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUITE=bookworm
VENV=/opt/notebook

step() { printf '==> %s\n' "$*"; }

mirror="${JOVIAL_GUARD_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' \
             | awk -v s="$SUITE" '$2 == s && $3 == "main" {print $1; exit}')"
fi
if [ -z "$mirror" ]; then
  echo "build.sh: no Debian $SUITE mirror configured for apt; set JOVIAL_GUARD_DEBIAN_MIRROR" >&2
  exit 2
fi

work="$(mktemp -d "$(dirname "$OUT")/.build-XXXXXX")"
root="$work/rootfs"
cleanup() {
  # debootstrap mounts /proc and /sys inside the root; never delete through a mount.
  { findmnt -rn -o TARGET | grep -F "$root/" | sort -r | while read -r m; do umount -l "$m"; done; } || true
  rm -rf --one-file-system "$work" || true
}
trap cleanup EXIT

step "debootstrap $SUITE (minbase) from the configured mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

step "python venv $VENV + pinned packages (requirements.txt)"
cp "$HERE/requirements.txt" "$root/tmp/requirements.txt"
# HTTPS here may go through a custom CA: lend the host's bundle for the install only.
cp /etc/ssl/certs/ca-certificates.crt "$root/tmp/host-ca.crt"
in_root() { env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
              HOME=/root LANG=C.UTF-8 chroot "$root" "$@"; }
in_root python3 -m venv "$VENV"
in_root "$VENV/bin/pip" install --no-cache-dir --disable-pip-version-check -q \
  --cert /tmp/host-ca.crt --only-binary=:all: --no-deps -r /tmp/requirements.txt
in_root "$VENV/bin/pip" check
in_root "$VENV/bin/python" -m ipykernel install --prefix "$VENV" --name python3 >/dev/null

step "non-root user jovyan (1000), hardening, scrubbing host details"
in_root groupadd --gid 1000 jovyan
in_root useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash jovyan
# Home is the user's alone: the home volume takes this mode when it is created.
chmod 0700 "$root/home/jovyan"
rm -f "$root/tmp/host-ca.crt" "$root/tmp/requirements.txt"
# No setuid/setgid programs: nothing in a notebook may gain privileges by exec.
find "$root" -xdev -perm /6000 -exec chmod ug-s {} +
# No compilers or package management at run time.
rm -rf "$root/var/cache/apt/"* "$root/var/lib/apt/lists/"* "$root/var/log/"* \
       "$root/root/.cache" "$root/debootstrap"
# The build host: mirror address, resolver, name.
printf 'deb http://deb.debian.org/debian %s main\n' "$SUITE" >"$root/etc/apt/sources.list"
: >"$root/etc/resolv.conf"
echo notebook >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$root/etc/hosts"
find "$root/tmp" "$root/var/tmp" -mindepth 1 -delete

left="$(find "$root" -xdev -perm /6000 | wc -l)"
if [ "$left" -ne 0 ]; then echo "build.sh: setuid/setgid files remain" >&2; exit 1; fi
for cc in gcc cc c++ g++ clang tcc; do
  if [ -e "$root/usr/bin/$cc" ]; then echo "build.sh: compiler $cc in image" >&2; exit 1; fi
done

step "packing root filesystem"
tar --numeric-owner --xattrs -C "$root" -cpf "$work/rootfs.tar" .
mv "$work/rootfs.tar" "$OUT"
step "built $(du -h "$OUT" | cut -f1) $OUT"
