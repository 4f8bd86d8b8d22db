#!/usr/bin/env bash
# Build the node agent's root filesystem as a tarball, without a registry.
#
#   images/node-agent/build.sh OUT.tar CONSTRAINTS.txt
#
# Its own image, not the webhook's: the agent runs privileged on every node and needs
# nftables (the `nft` program and libnftables, to load each notebook pod's egress) and
# pyroute2; the webhook, reachable from the API server, needs neither, and the agent needs
# none of the webhook's server (uvloop, the OPA client, prometheus) nor OPA. Each image
# carries only what its own process runs.
#
# debootstrap (minbase, bookworm, from the mirror apt already uses) + Debian's nftables; a
# python venv in /opt/jovial-guard/venv with the base dependencies plus kubernetes and
# pyroute2, pinned to CONSTRAINTS.txt; the project's code and profiles in
# /opt/jovial-guard/app (precompiled: the root is read-only at run time). Runs as root (it
# mounts, enters pods' network namespaces and writes the kubelet's directory), so no user is
# added; no setuid/setgid bits, no package caches, documentation or build-host traces.
# Needs root (debootstrap, chroot). Progress goes to stdout as "==> step" lines.
set -euo pipefail
OUT="${1:?usage: build.sh OUT.tar CONSTRAINTS.txt}"
CONSTRAINTS="${2:?constraints file (pip freeze of the tested venv)}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SUITE=bookworm
PREFIX=/opt/jovial-guard

# shellcheck source=../lib/debian-rootfs.sh
. "$HERE/../lib/debian-rootfs.sh"

make_work
debootstrap_minbase

# netbase: /etc/protocols, without which nft cannot resolve the rules' protocol names
# ("Could not resolve protocol name" for icmp, ipv6-icmp).
step "nftables (nft and libnftables) and netbase from Debian"
cp /etc/resolv.conf "$root/etc/resolv.conf"
in_root apt-get -o Acquire::https::CAInfo=/tmp/host-ca.crt -qq update >"$work/apt.log" 2>&1 \
  || { tail -n 20 "$work/apt.log" >&2; exit 1; }
in_root env DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::https::CAInfo=/tmp/host-ca.crt -qq -y \
  install --no-install-recommends nftables netbase >>"$work/apt.log" 2>&1 || { tail -n 20 "$work/apt.log" >&2; exit 1; }
in_root nft --version
in_root getent protocols icmp ipv6-icmp tcp udp >/dev/null

step "venv $PREFIX/venv: base dependencies, kubernetes and pyroute2, pinned"
install_venv webhook:kubernetes hub:pyroute2

step "the project's code and profiles in $PREFIX/app"
install_app
strip_venv
# Every module the agent's duties load, and libnftables through ctypes, as at run time.
in_root "$PREFIX/venv/bin/python" -c "
import jovial_guard.node.cli, jovial_guard.node.egress, jovial_guard.node.grants, jovial_guard.node.attest
import jovial_guard.node.cni_conflist, kubernetes.client
from jovial_guard.hardening import nft_lib
nft_lib._library()"
in_root jovial-guard node-agent --help >/dev/null

step "hardening, slimming, scrubbing host details"
slim_root
scrub_root node-agent
# aiohttp stays: the kubernetes client (37) requires it; no server in the agent uses it.
refuse_packages "node agent" jupyterhub dockerspawner kubespawner docker uvloop opa_client prometheus_client
if [ -e "$root/usr/local/bin/opa" ]; then echo "build.sh: opa in the node agent image" >&2; exit 1; fi

pack_root
