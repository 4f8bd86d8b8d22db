#!/usr/bin/env bash
# Debian packages the project runs on: the container engine (podman + runc), nftables and
# iproute2 for egress namespaces, debootstrap for the notebook image, AppArmor's parser for
# profile validation, etcd for the Kubernetes end-to-end test, wrk for benchmarks, and the
# engines' default seccomp allowlists the notebook profile is derived from, and what the
# engine's runc build needs (gcc, pkg-config, libseccomp-dev: runc links libseccomp).
# Idempotent: installs only what is missing.
#
#   install-system.sh setup [test] [bench]   the profiles whose packages are needed
# `setup` is what the embedded hub runs on; `test` adds etcd (the API server e2e), the CNI
# plugins and gcc (the single-node cluster's pod network and pause image) and Chromium (the
# dashboard's browser tests); `bench` adds wrk. runc (setup) also runs the cluster's pods.
set -euo pipefail
PACKAGES=(
  podman runc uidmap iproute2 nftables debootstrap apparmor
  golang-github-containers-common golang-github-docker-docker-dev
  nodejs gcc libc6-dev pkg-config libseccomp-dev
)
for profile in "${@:-setup}"; do
  case "$profile" in
    setup) ;;
    test) PACKAGES+=(etcd-server containernetworking-plugins gcc libc6-dev chromium chromium-driver) ;;
    bench) PACKAGES+=(wrk) ;;
    *) echo "install-system: unknown profile '$profile' (setup, test, bench)" >&2; exit 2 ;;
  esac
done
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
echo "system packages: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system: need root to apt-get install ${missing[*]}" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "system packages: done"
