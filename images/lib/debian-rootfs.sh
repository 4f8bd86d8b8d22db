# Shared steps of the image recipes: a Debian minbase root filesystem built without a
# registry, run in a chroot, scrubbed of build-host details, checked and packed.
# Sourced by images/*/build.sh after they set SUITE and OUT; needs root.

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

pack_root() {
  step "packing root filesystem"
  tar --numeric-owner --xattrs -C "$root" -cpf "$work/rootfs.tar" .
  mv "$work/rootfs.tar" "$OUT"
  step "built $(du -h "$OUT" | cut -f1) $OUT"
}
