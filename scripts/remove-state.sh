#!/usr/bin/env bash
# Remove a throw-away state root (a test run's): stop what still uses its engine storage,
# unmount what is mounted below it, then delete it. Refuses anything but the test runs'
# own temporary directories, so it can never be pointed at real state.
set -euo pipefail
state="${1:?usage: remove-state.sh STATE_DIR}"
case "$(basename "$state")" in
  jovial-guard-test-state.*) ;;
  *) echo "remove-state: refusing $state (not a test run's state root)" >&2; exit 2 ;;
esac
[ -d "$state" ] || exit 0
root="$state/engine/root"
# jovial_guard.runtime.podman.default_runroot: one run-time directory per storage root.
runroot="/run/jovial-guard/engine-$(printf '%s' "$(realpath -m "$root")" | sha256sum | cut -c1-12)"
if [ -d "$root" ] && command -v podman >/dev/null; then
  # Containers a failed test left running hold overlay mounts and conmon processes.
  CONTAINERS_CONF="$state/engine/containers.conf" timeout -s KILL 60 podman --root "$root" \
    --runroot "$runroot" --storage-driver overlay --runtime runc --cgroup-manager cgroupfs \
    --events-backend file rm -af -t 0 >/dev/null 2>&1 || true
fi
findmnt -rn -o TARGET | awk -v p="$state/" 'index($0, p) == 1' | sort -r | while read -r target; do
  umount -l "$target" 2>/dev/null || true
done
rm -rf "$state" "$runroot"
