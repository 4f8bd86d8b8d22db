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
KEY="$(key)"
TAR="$CACHE/images/webhook-$KEY.tar"
mkdir -p "$CACHE/images" "$HERE/.tools/images"
if [ "${JOVIAL_GUARD_SKIP_WEBHOOK_IMAGE:-}" = 1 ]; then
  echo "webhook image: skipped (JOVIAL_GUARD_SKIP_WEBHOOK_IMAGE=1)"; exit 0
fi
if [ ! -f "$TAR" ] && [ "${JOVIAL_GUARD_SETUP_FOR:-test}" != test ]; then
  # It embeds the code, so every code change makes a new key: `./guard env` does not pay
  # for that; `./guard test` (or running this script) builds it.
  echo "webhook image $KEY: not built for '${JOVIAL_GUARD_SETUP_FOR}' (./guard test or $0 builds it)"; exit 0
fi
if [ ! -f "$TAR" ]; then
  echo "webhook image $KEY: building (a few minutes)..."
  constraints="$(mktemp)"
  trap 'rm -f "$constraints"' EXIT
  python3 -m pip freeze --exclude-editable >"$constraints" \
    || { echo "70-webhook-image: pip freeze of the project venv failed (run inside ./guard env)" >&2; exit 2; }
  started=$(date +%s)
  nice bash "$HERE/images/webhook/build.sh" "$TAR.partial" "$constraints" "$OPA"
  mv -f "$TAR.partial" "$TAR"
  echo "webhook image $KEY: built in $(( $(date +%s) - started )) s"
  # Older builds go (each is ~360 MB); ones made in the last two hours may belong to another
  # checkout testing now, so they stay.
  find "$CACHE/images" -maxdepth 1 -name 'webhook-*.tar' ! -name "webhook-$KEY.tar" -mmin +120 -delete
fi
ln -sfn "$TAR" "$HERE/.tools/images/webhook.tar"
echo "webhook image $KEY: $(du -h "$TAR" | cut -f1) at $TAR"
