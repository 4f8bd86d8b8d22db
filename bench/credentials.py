#!/usr/bin/env python3
"""Benchmark: storage grants issued and verified per second, and rewrapping 10,000 grants.

Baselines measured in the same run, on the same payload:
* raw AES-256-GCM encrypt / decrypt of the grant secret with its header as AAD (the
  cryptographic floor of an envelope, no key wrap, no JSON, no disk);
* issuing without the per-grant fsync (what durability costs).

Run as ``python bench/credentials.py [--grants 10000]``; the last line is
``credentials: issue_per_s=X verify_per_s=Y rewrap_10k_s=Z``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from jovial_guard.credentials.envelope import seal  # noqa: E402
from jovial_guard.credentials.grant import Grant, canonical_json  # noqa: E402
from jovial_guard.credentials.issuer import Issuer  # noqa: E402

ARGS = dict(uid=1000, gid=100, mode="rw", mount_path="/lustre/home")


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issue", type=int, default=2000, help="grants issued for the issue rate (default 2000)")
    parser.add_argument("--verify", type=int, default=5000, help="verifications (default 5000)")
    parser.add_argument("--grants", type=int, default=10_000, help="grants to rewrap (default 10000)")
    args = parser.parse_args()

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
    print(f"credentials: issue_per_s={issue_per_s:.0f} verify_per_s={verify_per_s:.0f} rewrap_10k_s={rewrap_10k_s:.2f}")


if __name__ == "__main__":
    main()
