# Shared steps of the image recipes: a Debian minbase root filesystem built without a
# registry, run in a chroot, scrubbed of build-host details, checked and packed.
# Sourced by images/*/build.sh after they set SUITE, OUT, REPO, PREFIX and CONSTRAINTS; needs root.

step() { printf '==> %s\n' "$*"; }

# The Debian mirror apt already uses for $SUITE (or $JOVIAL_GUARD_DEBIAN_MIRROR).
debian_mirror() {
  local mirror="${JOVIAL_GUARD_DEBIAN_MIRROR:-}"
  if [ -z "$mirror" ]; then
    mirror="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' \
               | awk -v s="$SUITE" '$2 == s && $3 == "main" {print $1; exit}')"
  fi
  if [ -z "$mirror" ]; then
    echo "build.sh: no Debian $SUITE mirror configured for apt; set JOVIAL_GUARD_DEBIAN_MIRROR" >&2
    exit 2
  fi
  printf '%s\n' "$mirror"
}

# A work directory beside OUT, removed on exit; sets $work and $root (the rootfs).
make_work() {
  work="$(mktemp -d "$(dirname "$OUT")/.build-XXXXXX")"
  root="$work/rootfs"
  trap remove_work EXIT
}

remove_work() {
  # debootstrap mounts /proc and /sys inside the root; never delete through a mount.
  { findmnt -rn -o TARGET | grep -F "$root/" | sort -r | while read -r m; do umount -l "$m"; done; } || true
  rm -rf --one-file-system "$work" || true
}

debootstrap_minbase() {
  step "debootstrap $SUITE (minbase) from the configured mirror"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$root" "$(debian_mirror)" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  # HTTPS here may go through a custom CA: lend the host's bundle for the build only.
  cp /etc/ssl/certs/ca-certificates.crt "$root/tmp/host-ca.crt"
}

in_root() {
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 chroot "$root" "$@"
}

# No setuid/setgid bits, no package caches, no trace of the build host (mirror address,
# resolver, name, bootstrap log, temporary files); HOSTNAME names the image.
scrub_root() {
  local hostname="$1"
  find "$root" -xdev -perm /6000 -exec chmod ug-s {} +
  rm -rf "$root/var/cache/apt/"* "$root/var/lib/apt/lists/"* "$root/var/log/"* \
         "$root/root/.cache" "$root/debootstrap"
  printf 'deb http://deb.debian.org/debian %s main\n' "$SUITE" >"$root/etc/apt/sources.list"
  : >"$root/etc/resolv.conf"
  echo "$hostname" >"$root/etc/hostname"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$root/etc/hosts"
  find "$root/tmp" "$root/var/tmp" -mindepth 1 -delete
  local left
  left="$(find "$root" -xdev -perm /6000 | wc -l)"
  if [ "$left" -ne 0 ]; then echo "build.sh: setuid/setgid files remain" >&2; exit 1; fi
}

# A venv in $PREFIX/venv with `images/webhook/requirements.py ARGS...` (extras, or
# extra:package picks), pinned to $CONSTRAINTS (the tested venv's freeze), binary wheels only.
install_venv() {
  python3 "$REPO/images/webhook/requirements.py" "$@" >"$root/tmp/requirements.txt"
  grep -v -i '^jovial[-_]guard' "$CONSTRAINTS" | grep -v '^-e ' >"$root/tmp/constraints.txt"
  in_root python3 -m venv "$PREFIX/venv"
  in_root "$PREFIX/venv/bin/pip" install --no-cache-dir --disable-pip-version-check -q \
    --cert /tmp/host-ca.crt --only-binary=:all: -c /tmp/constraints.txt -r /tmp/requirements.txt
  in_root "$PREFIX/venv/bin/pip" check
}

# The project's code, policies and profiles in $PREFIX/app, precompiled (the root is
# read-only at run time), found by the venv through a .pth file, and `jovial-guard` on PATH.
install_app() {
  mkdir -p "$root$PREFIX/app"
  ( cd "$REPO" && tar --exclude='__pycache__' --exclude='*.pyc' -cf - jovial_guard policies profiles pyproject.toml ) \
    | tar -C "$root$PREFIX/app" -xf -
  echo "$PREFIX/app" >"$(echo "$root$PREFIX/venv/lib/python3"*/site-packages)/jovial_guard_app.pth"
  in_root "$PREFIX/venv/bin/python" -m compileall -q "$PREFIX/app/jovial_guard" "$PREFIX/venv/lib"
  cat >"$root/usr/local/bin/jovial-guard" <<SH
#!/bin/sh
exec $PREFIX/venv/bin/python -m jovial_guard "\$@"
SH
  chmod 0755 "$root/usr/local/bin/jovial-guard"
}

# Debug symbols of the venv's shared objects are not needed at run time.
strip_venv() {
  if command -v strip >/dev/null; then
    find "$root$PREFIX/venv" -name '*.so' -exec strip --strip-unneeded {} +
  fi
}

# pip (nothing is installed in a running container), documentation and locales.
slim_root() {
  rm -rf "$root$PREFIX/venv/lib/python3"*/site-packages/pip "$root$PREFIX/venv/lib/python3"*/site-packages/pip-* \
         "$root$PREFIX/venv/bin/pip"* "$root/usr/lib/python3"*/ensurepip "$root/usr/share/python-wheels"
  rm -rf "$root/usr/share/doc/"* "$root/usr/share/man/"* "$root/usr/share/info/"* "$root/usr/share/locale/"*
}

# Fails the build when a package named PACKAGE... is in the venv; IMAGE names the image.
refuse_packages() {
  local image="$1" forbidden
  shift
  for forbidden in "$@"; do
    if ls "$root$PREFIX/venv/lib/python3"*/site-packages | grep -qi "^$forbidden"; then
      echo "build.sh: $forbidden in the $image image" >&2; exit 1
    fi
  done
}

pack_root() {
  step "packing root filesystem"
  tar --numeric-owner --xattrs -C "$root" -cpf "$work/rootfs.tar" .
  mv "$work/rootfs.tar" "$OUT"
  step "built $(du -h "$OUT" | cut -f1) $OUT"
}
