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
install_venv webhook

step "the project's code, policies and profiles in $PREFIX/app"
install_app
install -m 0755 "$OPA" "$root/usr/local/bin/opa"
# Debug symbols are not needed at run time (OPA's alone are ~20 MB).
if command -v strip >/dev/null; then
  strip --strip-unneeded "$root/usr/local/bin/opa"
fi
strip_venv

in_root "$PREFIX/venv/bin/python" -c "import jovial_guard.admission.server, jovial_guard.policy.check_cli"

step "non-root user $UID_, hardening, slimming, scrubbing host details"
in_root groupadd --gid "$UID_" guard
in_root useradd --uid "$UID_" --gid "$UID_" --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin guard
slim_root
scrub_root webhook
refuse_packages webhook jupyterhub dockerspawner kubespawner

pack_root
