#!/usr/bin/env bash
# The node agent's image (images/node-agent/), built without a registry as a root
# filesystem tarball. Test-only: tests/integration/test_node_daemonset.py loads it into the
# test cluster's containerd and runs the isolation DaemonSet from it. Cached under
# $JOVIAL_GUARD_CACHE/images/ by a key over the recipe, the requirements picker,
# pyproject.toml, the code, policies and profiles; linked to .tools/images/node-agent.tar.
# A cached run takes well under a second.
#   scripts/test.d/71-node-agent-image.sh          build if needed, link
#   scripts/test.d/71-node-agent-image.sh --key    print the key
# `./guard env` links a cached build but does not build (the key follows every code change);
# JOVIAL_GUARD_SKIP_NODE_AGENT_IMAGE=1 skips it (the DaemonSet test then fails, saying so).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${JOVIAL_GUARD_CACHE:-$HOME/.cache/jovial_guard}"

key() {
  ( cd "$HERE" && find images/node-agent images/webhook/requirements.py images/lib jovial_guard policies profiles \
      pyproject.toml -type f ! -name '*.pyc' ! -path '*/__pycache__/*' ! -name README.md | LC_ALL=C sort \
      | while read -r f; do printf '%s\0' "$f"; sha256sum <"$f"; done ) | sha256sum | cut -c1-16
}

if [ "${1:-}" = "--key" ]; then key; exit 0; fi
# shellcheck source=../lib/keyed-image.sh
. "$HERE/scripts/lib/keyed-image.sh"
keyed_image node-agent JOVIAL_GUARD_SKIP_NODE_AGENT_IMAGE "$(key)" images/node-agent/build.sh
