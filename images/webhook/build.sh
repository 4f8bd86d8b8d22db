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

# shellcheck source=../lib/debian-rootfs.sh
. "$HERE/../lib/debian-rootfs.sh"

make_work
debootstrap_minbase

step "venv $PREFIX/venv: the [webhook] extra's dependencies, pinned"
python3 "$HERE/requirements.py" webhook >"$root/tmp/requirements.txt"
grep -v -i '^jovial[-_]guard' "$CONSTRAINTS" | grep -v '^-e ' >"$root/tmp/constraints.txt"
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
rm -rf "$root/usr/share/doc/"* "$root/usr/share/man/"* "$root/usr/share/info/"* "$root/usr/share/locale/"*
scrub_root webhook
for forbidden in jupyterhub dockerspawner kubespawner; do
  if ls "$root$PREFIX/venv/lib/python3"*/site-packages | grep -qi "^$forbidden"; then
    echo "build.sh: $forbidden in the webhook image" >&2; exit 1
  fi
done

pack_root
