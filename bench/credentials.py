#!/usr/bin/env python3
"""Benchmark: storage grants issued and verified per second, and rewrapping 10,000 grants.

Baselines measured in the same run, on the same payload:
* raw AES-256-GCM encrypt / decrypt of the grant secret with its header as AAD (the
  cryptographic floor of an envelope, no key wrap, no JSON, no disk);
* issuing without the per-grant fsync (what durability costs).

Spawn storage step (what the hub does per spawn: find the user's live grants, revoke them,
issue the new one), in stores holding 0, 1,000 and 10,000 past grants, each history like a
hub's (200 users, every grant but each user's last revoked and expired). Baseline in the same
run, on a copy of the same store, alternating step by step: the previous code path, which
found the live grants and each revoked grant's owner by reading every header in the store and
rewrote the whole revocation list per revocation.

Run as ``python bench/credentials.py [--grants 10000] [--step-only]``; the last line is
``credentials: issue_per_s=X verify_per_s=Y rewrap_10k_s=Z step_ms_10k=S old_step_ms_10k=O``
(p50 of the storage step at 10,000 past grants); ``--step-only`` prints only the step lines.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from jovial_guard.atomic import atomic_write  # noqa: E402
from jovial_guard.credentials.envelope import seal  # noqa: E402
from jovial_guard.credentials.grant import Grant, canonical_json  # noqa: E402
from jovial_guard.credentials.issuer import Issuer  # noqa: E402
from jovial_guard.credentials.revocation import Revocation  # noqa: E402

ARGS = dict(uid=1000, gid=100, mode="rw", mount_path="/lustre/home")


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def old_revocation_write(path: Path, entry: Revocation) -> None:
    """The previous revocation write: the whole list parsed, merged and rewritten (indented JSON)."""
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = json.loads(path.read_bytes())["revoked"] if path.exists() else {}
        merged = {entry.serial: {"user": entry.user, "reason": entry.reason, "at": entry.at}, **current}
        doc = {"version": 1, "revoked": dict(sorted(merged.items()))}
        atomic_write(path, json.dumps(doc, indent=1, sort_keys=True).encode(), mode=0o600)


def old_step(issuer: Issuer, user: str) -> None:
    """The previous storage step: every header read to find live grants, and again per revoke;
    each revocation rewrites the whole list."""
    now = int(issuer.clock())
    live = [s for s, h, r in issuer.list_grants()
            if h is not None and h["user"] == user and r is None and h["expires"] > now]
    for serial in live:
        owner = ""
        for s, header in issuer.store.headers():
            if s == serial and header is not None:
                owner = header["user"]
        old_revocation_write(issuer.revocations.path, Revocation(serial, owner, "replaced by a new spawn", now))
    issuer.issue(user=user, fileset=f"home/{user}", **ARGS)  # type: ignore[arg-type]


def new_step(issuer: Issuer, user: str) -> None:
    """The storage step as jovial_guard.credentials.hub.attach_sync runs it."""
    for serial in issuer.live_serials(user=user):
        issuer.revoke(serial=serial, reason="replaced by a new spawn")
    issuer.issue(user=user, fileset=f"home/{user}", **ARGS)  # type: ignore[arg-type]


def fill_history(issuer: Issuer, count: int, *, users: int = 200) -> None:
    """``count`` past grants over ``users`` users (alice among them): all revoked and expired
    except each user's last, which is live (as on a hub whose users each have a server)."""
    now = int(issuer.clock())
    names = ["alice"] + [f"u{i}" for i in range(users - 1)]
    template = issuer.issue(user="alice", fileset="home/alice", **ARGS).grant  # type: ignore[arg-type]
    last: dict[str, str] = {}
    revoked: list[Revocation] = []
    for i in range(count):
        user = names[i % users]
        g = Grant(**{**template.__dict__, "serial": os.urandom(16).hex(), "user": user, "fileset": f"home/{user}",
                     "nodemap": f"jg-{user}", "issued": now - 30 * 86400 + i, "expires": now - 29 * 86400 + i})
        if i >= count - users:  # each user's last grant: still live
            g = Grant(**{**g.__dict__, "issued": now - 60, "expires": now + 8 * 3600})
        issuer.store.put(g.serial, seal(g, keyring=issuer.keyring), durable=False)
        if user in last:
            revoked.append(Revocation(last[user], user, "replaced by a new spawn", g.issued))
        last[user] = g.serial
    issuer.revocations.add(revoked)
    issuer.revocations.discard({"0" * 32})  # merges the journal into revoked.json, as it is after a while
    issuer.store.sync()


def step_bench(history: list[int], steps: int) -> list[tuple[int, float, float, float, float, float]]:
    """Per history size: index rebuild at open (s), new step p50/p95 (ms), old step p50/p95 (ms)."""
    rows = []
    for count in history:
        with tempfile.TemporaryDirectory(prefix="jg-bench-step-") as tmp:
            issuer = Issuer.from_directory(Path(tmp) / "state", create=True)
            fill_history(issuer, count)
            shutil.copytree(Path(tmp) / "state", Path(tmp) / "old-state")  # the same history for the old path
            old = Issuer.from_directory(Path(tmp) / "old-state", keyring_path=Path(tmp) / "keys" / "kek.json")
            fresh = Issuer.from_directory(Path(tmp) / "state")  # a new process: its index is rebuilt once
            start = time.perf_counter()
            fresh.live_serials(user="alice")
            rebuild_s = time.perf_counter() - start
            new_ms: list[float] = []
            old_ms: list[float] = []
            for _ in range(steps):  # alternate step by step, so both paths run under the same load
                for fn, who, out in ((new_step, fresh, new_ms), (old_step, old, old_ms)):
                    start = time.perf_counter()
                    fn(who, "alice")
                    out.append((time.perf_counter() - start) * 1000)
            for who in (fresh, old):
                if len(who.live_serials(user="alice")) != 1:
                    raise SystemExit("storage step left other than one live grant")
        q_new, q_old = statistics.quantiles(new_ms, n=20), statistics.quantiles(old_ms, n=20)
        rows.append((count, rebuild_s, statistics.median(new_ms), q_new[18], statistics.median(old_ms), q_old[18]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issue", type=int, default=2000, help="grants issued for the issue rate (default 2000)")
    parser.add_argument("--verify", type=int, default=5000, help="verifications (default 5000)")
    parser.add_argument("--grants", type=int, default=10_000, help="grants to rewrap (default 10000)")
    parser.add_argument("--history", default="0,1000,10000", help="past grants per step run (default 0,1000,10000)")
    parser.add_argument("--steps", type=int, default=40, help="storage steps per path and history (default 40)")
    parser.add_argument("--step-only", action="store_true", help="only the spawn storage step")
    args = parser.parse_args()
    logging.getLogger("jovial_guard").setLevel(logging.ERROR)  # one "revoked" line per step otherwise

    rows = step_bench([int(n) for n in args.history.split(",")], args.steps)
    for count, rebuild_s, p50, p95, old_p50, old_p95 in rows:
        print(f"storage step, {count:>6} past grants: p50 {p50:6.2f} ms p95 {p95:6.2f} ms | previous path "
              f"p50 {old_p50:7.2f} ms p95 {old_p95:7.2f} ms | index rebuild at open {rebuild_s * 1000:.0f} ms")
    step = {count: (p50, old_p50) for count, _, p50, _, old_p50, _ in rows}
    step_10k, old_10k = step.get(10_000, (float("nan"), float("nan")))
    if args.step_only:
        print(f"credentials: step_ms_10k={step_10k:.2f} old_step_ms_10k={old_10k:.2f}")
        return

    with tempfile.TemporaryDirectory(prefix="jg-bench-creds-") as tmp:
        issuer = Issuer.from_directory(Path(tmp) / "state", create=True)

        # baseline: raw AES-GCM on the same payload
        sample = issuer.issue(user="alice", fileset="home/alice", **ARGS).grant  # type: ignore[arg-type]
        aad = canonical_json(sample.header(key_id="k1"))
        aead, nonce = AESGCM(os.urandom(32)), os.urandom(12)
        n = args.verify
        start = time.perf_counter()
        for _ in range(n):
            aead.encrypt(nonce, sample.secret, aad)
        raw_enc = rate(n, time.perf_counter() - start)
        ct = aead.encrypt(nonce, sample.secret, aad)
        start = time.perf_counter()
        for _ in range(n):
            aead.decrypt(nonce, ct, aad)
        raw_dec = rate(n, time.perf_counter() - start)

        # issue: fresh DEK, wrap, seal, atomic durable write (fsync file + directory)
        start = time.perf_counter()
        tokens = [
            issuer.issue(user=f"u{i}", fileset=f"home/u{i}", **ARGS).token  # type: ignore[arg-type]
            for i in range(args.issue)
        ]
        issue_s = time.perf_counter() - start
        issue_per_s = rate(args.issue, issue_s)
        # issue without fsync (atomic rename only): the cost of durability
        start = time.perf_counter()
        for i in range(args.issue):
            g = Grant(
                **{
                    **sample.__dict__,
                    "serial": os.urandom(16).hex(),
                    "user": f"v{i}",
                    "fileset": f"home/v{i}",
                    "nodemap": f"jg-v{i}",
                }
            )
            issuer.store.put(g.serial, seal(g, keyring=issuer.keyring), durable=False)
        nosync_per_s = rate(args.issue, time.perf_counter() - start)

        # verify: parse, unwrap DEK, decrypt, constant-time user/fileset check, revocation, expiry
        start = time.perf_counter()
        for i in range(args.verify):
            j = i % len(tokens)
            issuer.verify(tokens[j], user=f"u{j}", fileset=f"home/u{j}")
        verify_per_s = rate(args.verify, time.perf_counter() - start)

        # rewrap: bring the store to N grants, rotate, re-seal every one (atomic replace, fsync each)
        have = len(issuer.store.serials())
        for i in range(max(0, args.grants - have)):
            g = Grant(
                **{
                    **sample.__dict__,
                    "serial": os.urandom(16).hex(),
                    "user": f"w{i}",
                    "fileset": f"home/w{i}",
                    "nodemap": f"jg-w{i}",
                }
            )
            issuer.store.put(g.serial, seal(g, keyring=issuer.keyring), durable=False)
        issuer.store.sync()
        total = len(issuer.store.serials())
        issuer.keyring.rotate()  # type: ignore[attr-defined]
        start = time.perf_counter()
        report = issuer.rewrap()
        rewrap_s = time.perf_counter() - start
        if report.rewrapped != total or report.failed:
            raise SystemExit(f"rewrap incomplete: {report}")
        rewrap_10k_s = rewrap_s * 10_000 / total
        issuer.keyring.rotate()  # type: ignore[attr-defined]
        start = time.perf_counter()
        issuer.rewrap(durable=False)
        rewrap_batch_s = (time.perf_counter() - start) * 10_000 / total

    print(f"baseline raw AES-256-GCM (same payload+AAD): encrypt {raw_enc:,.0f}/s, decrypt {raw_dec:,.0f}/s")
    print(f"issue   {issue_per_s:,.0f}/s  (durable: fsync per grant; {nosync_per_s:,.0f}/s without fsync)")
    print(f"verify  {verify_per_s:,.0f}/s  ({raw_dec / verify_per_s:.1f}x the raw decrypt cost)")
    print(f"rewrap  {total} grants in {rewrap_s:.2f}s (fsync each); {rewrap_batch_s:.2f}s per 10k without file fsyncs")
    print(f"credentials: issue_per_s={issue_per_s:.0f} verify_per_s={verify_per_s:.0f} rewrap_10k_s={rewrap_10k_s:.2f} "
          f"step_ms_10k={step_10k:.2f} old_step_ms_10k={old_10k:.2f}")


if __name__ == "__main__":
    main()
