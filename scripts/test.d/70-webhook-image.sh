#!/usr/bin/env bash
# The admission webhook image (images/webhook/), built without a registry as a root
# filesystem tarball. Test-only: tests/integration/test_webhook_image.py imports it into the
# tests' podman storage and runs it. Cached under $JOVIAL_GUARD_CACHE/images/ by a key over
# the recipe, pyproject.toml, the code, policies, profiles and the OPA build; linked to
# .tools/images/webhook.tar. A cached run takes well under a second.
#   scripts/test.d/70-webhook-image.sh          build if needed, link
#   scripts/test.d/70-webhook-image.sh --key    print the key
# `./guard env` links a cached build but does not build (the key follows every code change);
# JOVIAL_GUARD_SKIP_WEBHOOK_IMAGE=1 skips it (the image test then skips, saying so).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${JOVIAL_GUARD_CACHE:-$HOME/.cache/jovial_guard}"
OPA="$(readlink -f "$HERE/.tools/bin/opa" 2>/dev/null || true)"

key() {
  ( cd "$HERE" && find images/webhook images/lib jovial_guard policies profiles pyproject.toml -type f \
      ! -name '*.pyc' ! -path '*/__pycache__/*' ! -name README.md | LC_ALL=C sort \
      | while read -r f; do printf '%s\0' "$f"; sha256sum <"$f"; done
    printf 'opa %s\n' "$OPA" ) | sha256sum | cut -c1-16
}

if [ "${1:-}" = "--key" ]; then key; exit 0; fi
[ -x "$OPA" ] || { echo "70-webhook-image: OPA is not built (.tools/bin/opa); run ./guard env first" >&2; exit 2; }
# shellcheck source=../lib/keyed-image.sh
. "$HERE/scripts/lib/keyed-image.sh"
keyed_image webhook JOVIAL_GUARD_SKIP_WEBHOOK_IMAGE "$(key)" images/webhook/build.sh "$OPA"
