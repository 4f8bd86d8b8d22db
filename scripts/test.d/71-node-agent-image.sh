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
KEY="$(key)"
TAR="$CACHE/images/node-agent-$KEY.tar"
mkdir -p "$CACHE/images" "$HERE/.tools/images"
if [ "${JOVIAL_GUARD_SKIP_NODE_AGENT_IMAGE:-}" = 1 ]; then
  echo "node agent image: skipped (JOVIAL_GUARD_SKIP_NODE_AGENT_IMAGE=1)"; exit 0
fi
if [ ! -f "$TAR" ] && [ "${JOVIAL_GUARD_SETUP_FOR:-test}" != test ]; then
  echo "node agent image $KEY: not built for '${JOVIAL_GUARD_SETUP_FOR}' (./guard test or $0 builds it)"; exit 0
fi
if [ ! -f "$TAR" ]; then
  echo "node agent image $KEY: building (a few minutes)..."
  constraints="$(mktemp)"
  trap 'rm -f "$constraints"' EXIT
  python3 -m pip freeze --exclude-editable >"$constraints" \
    || { echo "71-node-agent-image: pip freeze of the project venv failed (run inside ./guard env)" >&2; exit 2; }
  started=$(date +%s)
  nice bash "$HERE/images/node-agent/build.sh" "$TAR.partial" "$constraints"
  mv -f "$TAR.partial" "$TAR"
  echo "node agent image $KEY: built in $(( $(date +%s) - started )) s"
  # Older builds go; ones made in the last two hours may belong to another checkout testing now.
  find "$CACHE/images" -maxdepth 1 -name 'node-agent-*.tar' ! -name "node-agent-$KEY.tar" -mmin +120 -delete
fi
ln -sfn "$TAR" "$HERE/.tools/images/node-agent.tar"
echo "node agent image $KEY: $(du -h "$TAR" | cut -f1) at $TAR"
