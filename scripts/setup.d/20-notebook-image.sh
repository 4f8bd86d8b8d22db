#!/usr/bin/env bash
# The hardened notebook image (images/notebook/), built without a registry and imported into
# the project's podman storage. Cached by recipe hash under $JOVIAL_GUARD_CACHE/images/;
# a second run only checks that the engine still has it (about a second).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec python3 -m jovial_guard.runtime.image
