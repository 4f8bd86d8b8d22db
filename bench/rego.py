"""What one decision of the Rego costs, measured in ways a busy machine does not blur.

Every benchmark that goes through HTTP on this shared 2-core machine swings by 2-3x with the
other processes' load; the policy's own cost can be compared between two versions of
policies/ with:

* CPU time: ``opa eval`` of the batch entry point over the decision corpus
  (tests/vectors/decisions, default settings), user + system seconds of the process minus
  the same process answering a trivial query, per decision (CPU time, not wall time: less
  sensitive to other processes, though not immune);
* expression evaluations: the count ``opa eval --profile`` reports over the same batch,
  per decision and per policy file. Deterministic: the same policy and corpus always give
  the same count, so it shows whether a rewrite made OPA do less work.

    python bench/rego.py [--policies DIR] [--rounds 3]

Last line: ``rego: decisions=N cpu_ms=X evals=Y`` (X the median over the rounds, Y per
decision).
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, find_opa  # noqa: E402

CORPUS = REPO / "tests" / "vectors" / "decisions" / "corpus.jsonl.gz"
QUERY = "count(data.jovial_guard.batch.decisions)"


def _cpu_seconds(cmd: list[str]) -> float:
    """User + system CPU seconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def evaluations(opa: str, policies: Path, batch: Path) -> Counter[str]:
    """Expression evaluations per policy file (from ``opa eval --profile``)."""
    out = subprocess.run([opa, "eval", "-d", str(policies), "-i", str(batch), QUERY, "--profile",
                          "--profile-limit", "100000", "--format", "json"], check=True, capture_output=True,
                         text=True).stdout
    counts: Counter[str] = Counter()
    for row in json.loads(out).get("profile", []):
        file = row.get("location", {}).get("file", "")
        if file:
            counts[Path(file).name] += int(row.get("num_eval", 0))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", type=Path, default=DEFAULT_POLICY_DIR, help="policy directory to measure")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    opa = find_opa()
    inputs = [json.loads(line)["input"] for line in gzip.decompress(CORPUS.read_bytes()).splitlines()
              if line and json.loads(line)["settings"] == "default"]
    with tempfile.TemporaryDirectory(prefix="jg-bench-rego-") as tmp:
        batch = Path(tmp) / "batch.json"
        batch.write_text(json.dumps({"batch": inputs}))
        base = [opa, "eval", "-d", str(args.policies), "-i", str(batch)]
        cpu = []
        for _ in range(args.rounds):
            full = _cpu_seconds([*base, QUERY])
            trivial = _cpu_seconds([*base, "count(input.batch)"])
            cpu.append(1000 * (full - trivial) / len(inputs))
        counts = evaluations(opa, args.policies, batch)
    total = sum(counts.values())
    print(f"{len(inputs)} decisions (tests/vectors/decisions, default settings) with {args.policies}")
    print("expression evaluations per decision, by file: " + ", ".join(
        f"{name} {n / len(inputs):.0f}" for name, n in counts.most_common()))
    print(f"cpu ms per decision, each round: {', '.join(f'{c:.2f}' for c in cpu)}")
    print(f"rego: decisions={len(inputs)} cpu_ms={statistics.median(cpu):.2f} evals={total / len(inputs):.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
