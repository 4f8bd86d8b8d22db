"""One decision's cost: the OPA server asked over HTTP vs. OPA's compiled policy in process.

Both engines decide the same inputs (every input of the decision corpus,
tests/vectors/decisions, under policies/data.json), one at a time, in one run:

* opa:  a managed ``opa run --server`` on policies/, asked through the project's own client
  (``OpaConnection.query_encoded``: keep-alive, the input encoded once); cost = wall time per
  decision, and CPU per decision of the OPA process plus this process;
* wasm: ``opa build -t wasm`` of the same policies, evaluated by ``WasmConnection`` (wasmtime,
  instance reused, input written into the module's memory, result read as JSON); cost = wall
  time and CPU per decision of this process (there is no other).

Every wasm decision is compared with OPA's (the whole decision document): the last line
says how many differ.

    python bench/decision_engine.py [--rounds 3]

Last line: ``decision: opa_ms=A opa_cpu_ms=B wasm_ms=C wasm_cpu_ms=D speedup=A/C differ=N``
(medians over the rounds, per decision).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jovial_guard.policy.client import OpaConnection, OpaEndpoint, encode_input  # noqa: E402
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa, policy_revision  # noqa: E402
from jovial_guard.policy.wasm_bundle import compile_directory  # noqa: E402
from jovial_guard.policy.wasm_engine import WasmConnection  # noqa: E402

CORPUS = REPO / "tests" / "vectors" / "decisions" / "corpus.jsonl.gz"
PACKAGE, RULE = "jovial_guard.main", "decision"


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    return time.process_time()


async def opa_round(connection: OpaConnection, pid: int, inputs: list[bytes]) -> tuple[float, float, list[Any]]:
    cpu0, own0, wall0 = _cpu_of(pid), _own_cpu(), time.perf_counter()
    answers = [await connection.query_encoded(PACKAGE, RULE, body) for body in inputs]
    wall = time.perf_counter() - wall0
    cpu = _cpu_of(pid) - cpu0 + _own_cpu() - own0
    return wall / len(inputs) * 1000, cpu / len(inputs) * 1000, answers


def wasm_round(connection: WasmConnection, inputs: list[bytes]) -> tuple[float, float, list[Any]]:
    own0, wall0 = _own_cpu(), time.perf_counter()
    answers = [connection.decide_encoded(PACKAGE, RULE, body) for body in inputs]
    wall = time.perf_counter() - wall0
    return wall / len(inputs) * 1000, (_own_cpu() - own0) / len(inputs) * 1000, answers


async def main(rounds: int) -> None:
    cases = [json.loads(line) for line in gzip.decompress(CORPUS.read_bytes()).splitlines() if line]
    inputs = [encode_input(c["input"]) for c in cases]
    revision = policy_revision(DEFAULT_POLICY_DIR)
    wasm = WasmConnection.from_artifact(compile_directory(DEFAULT_POLICY_DIR, revision), deadline=5.0)
    results: dict[str, list[tuple[float, float]]] = {"opa": [], "wasm": []}
    with ManagedOpa(DEFAULT_POLICY_DIR, revision=revision) as opa:
        pid = opa._proc.pid if opa._proc else 0
        async with OpaConnection(OpaEndpoint(opa.url), timeout=10.0) as connection:
            await opa_round(connection, pid, inputs[:100])  # warm both
            wasm_round(wasm, inputs[:100])
            for _ in range(rounds):
                o_ms, o_cpu, o_answers = await opa_round(connection, pid, inputs)
                w_ms, w_cpu, w_answers = wasm_round(wasm, inputs)
                results["opa"].append((o_ms, o_cpu))
                results["wasm"].append((w_ms, w_cpu))
    differ = sum(1 for a, b in zip(o_answers, w_answers, strict=True) if encode_input({"d": a}) != encode_input({"d": b}))
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in results.items()}
    print(f"{len(inputs)} corpus inputs x {rounds} rounds, one at a time; load {os.getloadavg()[0]:.2f}")
    for name, (ms, cpu) in med.items():
        print(f"{name:5s} per decision: wall {ms:6.3f} ms  cpu {cpu:6.3f} ms")
    print(f"decision: opa_ms={med['opa'][0]:.3f} opa_cpu_ms={med['opa'][1]:.3f} wasm_ms={med['wasm'][0]:.3f} "
          f"wasm_cpu_ms={med['wasm'][1]:.3f} speedup={med['opa'][0] / med['wasm'][0]:.2f} differ={differ}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args().rounds))
