# A test image built from its recipe into the version-keyed cache and linked into the checkout.
#
#   keyed_image NAME SKIP_VAR KEY RECIPE [RECIPE_ARGS...]
#
# $JOVIAL_GUARD_CACHE/images/NAME-KEY.tar is built by `RECIPE OUT CONSTRAINTS RECIPE_ARGS...`
# (CONSTRAINTS: the project venv's pip freeze) unless it exists, and linked to
# .tools/images/NAME.tar. SKIP_VAR=1 skips it (an explicit opt-out; the tests needing it say
# so). Only `./guard test` (JOVIAL_GUARD_SETUP_FOR=test, the default) builds: the image embeds
# the code, so every change makes a new key, and `./guard env` links a cached build only.
# Sourced by scripts/test.d/*-image.sh, which set HERE (the checkout) and CACHE.
keyed_image() {
  local name="$1" skip_var="$2" key="$3" recipe="$4"
  shift 4
  local tar="$CACHE/images/$name-$key.tar" label="$name image $key"
  mkdir -p "$CACHE/images" "$HERE/.tools/images"
  if [ "${!skip_var:-}" = 1 ]; then
    echo "$name image: skipped ($skip_var=1)"; return 0
  fi
  if [ ! -f "$tar" ] && [ "${JOVIAL_GUARD_SETUP_FOR:-test}" != test ]; then
    echo "$label: not built for '${JOVIAL_GUARD_SETUP_FOR}' (./guard test or $0 builds it)"; return 0
  fi
  if [ ! -f "$tar" ]; then
    echo "$label: building (a few minutes)..."
    local constraints started
    constraints="$(mktemp)"
    # shellcheck disable=SC2064 # the path is fixed now
    trap "rm -f '$constraints'" EXIT
    python3 -m pip freeze --exclude-editable >"$constraints" \
      || { echo "$name image: pip freeze of the project venv failed (run inside ./guard env)" >&2; exit 2; }
    started=$(date +%s)
    nice bash "$HERE/$recipe" "$tar.partial" "$constraints" "$@"
    mv -f "$tar.partial" "$tar"
    echo "$label: built in $(( $(date +%s) - started )) s"
    # Older builds go (each is a few hundred MB); ones made in the last two hours may belong
    # to another checkout testing now, so they stay.
    find "$CACHE/images" -maxdepth 1 -name "$name-*.tar" ! -name "$name-$key.tar" -mmin +120 -delete
  fi
  ln -sfn "$tar" "$HERE/.tools/images/$name.tar"
  echo "$label: $(du -h "$tar" | cut -f1) at $tar"
}
