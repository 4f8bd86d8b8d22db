#!/usr/bin/env bash
# Build the hardened single-user notebook root filesystem as a tarball, without a registry.
#
#   images/notebook/build.sh OUT.tar
#
# debootstrap (minbase, bookworm, from the mirror apt already uses) + python3 venv in
# /opt/notebook with the pinned packages of requirements.txt. Then hardening: a non-root
# user jovyan (uid 1000), no setuid/setgid bits anywhere, no compilers, no package caches,
# and no trace of the build host (images/lib/debian-rootfs.sh).
# Needs root (debootstrap, chroot). Progress goes to stdout as "==> step" lines.
set -euo pipefail
OUT="${1:?usage: build.sh OUT.tar}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUITE=bookworm
VENV=/opt/notebook
# shellcheck source=../lib/debian-rootfs.sh
. "$HERE/../lib/debian-rootfs.sh"

make_work
debootstrap_minbase

step "python venv $VENV + pinned packages (requirements.txt)"
cp "$HERE/requirements.txt" "$root/tmp/requirements.txt"
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
scrub_root notebook
# No compilers at run time.
for cc in gcc cc c++ g++ clang tcc; do
  if [ -e "$root/usr/bin/$cc" ]; then echo "build.sh: compiler $cc in image" >&2; exit 1; fi
done

pack_root
