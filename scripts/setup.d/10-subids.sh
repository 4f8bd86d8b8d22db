#!/usr/bin/env bash
# The host ids user containers are mapped to: a locked system account `jovial-guard` and its
# range in /etc/subuid and /etc/subgid (default 1000000000, 16384 blocks of 65536 ids, outside
# login.defs' UID and SUB_UID ranges). Idempotent; prints every change it makes to the host and
# refuses, changing nothing, if the range would overlap a real account or another range.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [ "$(id -u)" -ne 0 ]; then
  echo "subordinate ids: need root to edit /etc/subuid and /etc/subgid" >&2
  exit 2
fi
exec python3 -m jovial_guard.hardening.subids
