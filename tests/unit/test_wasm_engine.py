"""The compiled policy decides exactly as the OPA server does, and fails closed otherwise.

Differential: every input of the decision corpus (tests/vectors/decisions, under the
default and the variant settings), and hostile inputs, decided by OPA's compiled policy in
process must give the decision the real opa gives, byte for byte (canonical JSON of the
whole decision document). Then: the compiled policy comes only from a bundle that verifies
(a tampered module or a foreign key is refused), a new bundle revision swaps it, and every
failure (a trap, the memory cap, the deadline, an undefined decision, a missing built-in)
is the engine's ``policy-engine-unavailable`` denial. Hostile numbers and built-in
arguments: tests/unit/test_wasm_numbers.py.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.decision import ENGINE_UNAVAILABLE
from jovial_guard.errors import PolicyEngineUnavailable
from jovial_guard.normalize import workload_from_object
from jovial_guard.policy import wasm_builtins, wasm_runtime
from jovial_guard.policy.bundles import BundleError, SigningKey, build_bundle
from jovial_guard.policy.client import encode_input
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, find_opa
from jovial_guard.policy.wasm_bundle import WASM_ROOT, PolicyArtifact, load_verified
from jovial_guard.policy.wasm_engine import BundleWatcher, WasmConnection
from tests.unit.wasm_support import canonical as _canonical
from tests.unit.wasm_support import compiled_policy, generate
from tests.unit.wasm_support import connection as _connection
from tests.unit.wasm_support import pod as _pod
from tests.unit.wasm_support import wasm_decisions as _wasm_decisions


@pytest.fixture(scope="module")
def compiled() -> tuple[bytes, dict[str, Any]]:
    return compiled_policy()


def test_every_corpus_input_is_decided_as_by_opa(compiled: tuple[bytes, dict[str, Any]]) -> None:
    cases = [json.loads(line) for line in gzip.decompress(generate.CORPUS.read_bytes()).splitlines() if line]
    by_opa = generate.decide([{k: c[k] for k in ("name", "settings", "input")} for c in cases])
    connections = {"default": _connection(compiled), "variant": _connection(compiled, settings=generate.variant_settings())}
    differing = []
    for i, case in enumerate(cases):
        ours = _wasm_decisions(connections[case["settings"]], [case["input"]])[0]
        if _canonical(ours) != _canonical(by_opa.get(i)) or _canonical(ours) != _canonical(case["decision"]):
            differing.append(case["name"])
    assert len(cases) > 900
    assert not differing, f"{len(differing)} of {len(cases)} differ, first {differing[:5]}"


def test_the_batch_entry_point_answers_like_the_single_one(compiled: tuple[bytes, dict[str, Any]]) -> None:
    connection = _connection(compiled)
    cases = [json.loads(line) for line in gzip.decompress(generate.CORPUS.read_bytes()).splitlines() if line][:120]
    body = b'{"batch":[' + b",".join(encode_input(c["input"]) for c in cases) + b"]}"
    answers = connection.decide_encoded("jovial_guard.batch", "decisions", body)
    singles = _wasm_decisions(connection, [c["input"] for c in cases])
    assert [_canonical(answers.get(str(i))) for i in range(len(cases))] == [_canonical(s) for s in singles]


def _hostile_inputs() -> list[dict[str, Any]]:
    image = "quay.io/jupyter/base-notebook:2024-05-27"
    deep: Any = "bottom"
    for _ in range(90):
        deep = {"n": deep}
    names = ['q"uote\\back', "nul\x00byte", "del\u2028line", "soft\u00adhyphen", "ctl\x01\x1f\x7f", "emoji\U0001f600", "tab\tnl\n", "zw\u200b", "ü" * 50]
    pods = [_pod({"name": name, "image": image, "securityContext": {"privileged": True}}) for name in names]
    pods += [
        _pod({"name": "deep", "image": image, "x-extension": deep}),
        _pod({"name": "huge", "image": image + "x" * 400_000}),
        _pod({"name": "amounts", "image": image, "resources": {"limits": {"cpu": "1.5e3m", "memory": "0.3Gi"}}}),
        _pod({"name": "bad-amounts", "image": image, "resources": {"limits": {"cpu": "1..5", "memory": "12 Gi"}}}),
        _pod({"name": "odd-amounts", "image": image, "resources": {"limits": {"cpu": "+.5k", "memory": "7e-1kib"}}}),
        _pod({"name": "ports", "image": image, "ports": [{"containerPort": 1, "hostPort": 8080.5}]}),
        _pod({"name": "sel", "image": image, "securityContext": {"seLinuxOptions": {"user": "u", "level": 1.25}}}),
        _pod({"name": "ids", "image": image, "securityContext": {"runAsUser": 1e3, "runAsGroup": -1}}),
        _pod({"name": "floats", "image": image, "securityContext": {"seLinuxOptions": {
            "user": 1e16, "role": 2.5e-7, "type": 100.0, "level": [-0.0, 1e300, 123456789012345678]}}}),
        _pod({"name": "float-ports", "image": image, "ports": [{"containerPort": 1, "hostPort": 1e21}]}),
    ]
    return [workload_from_object(p).to_input() for p in pods]


def test_an_input_json_cannot_carry_is_denied_before_any_engine(compiled: tuple[bytes, dict[str, Any]]) -> None:
    """Bad UTF-8 never reaches an engine (the shared parser refuses it); an unpaired
    surrogate built in Python cannot be encoded, and the engine denies."""
    from jovial_guard.documents import read_stream

    assert all(doc.error for doc in read_stream(b'{"kind": "Pod", "metadata": {"name": "\xff"}}'))
    pod = _pod({"name": "x\ud800", "image": "quay.io/jupyter/base-notebook:2024-05-27"})
    decision = asyncio.run(PolicyEngine(_connection(compiled)).decide(workload_from_object(pod)))
    assert not decision.allowed and decision.reasons[0].rule == ENGINE_UNAVAILABLE


def _opa_on_the_same_bytes(inputs: list[dict[str, Any]], tmp_path: Path) -> dict[int, Any]:
    """The real opa's decisions of exactly the bytes the engines are given (``encode_input``:
    the number texts of floats such as 1e16 differ between JSON writers)."""
    batch = tmp_path / "batch.json"
    batch.write_bytes(b'{"batch":[' + b",".join(encode_input(doc) for doc in inputs) + b"]}")
    proc = subprocess.run([find_opa(), "eval", "--format", "json", "-d", str(DEFAULT_POLICY_DIR), "-i", str(batch),
                           "data.jovial_guard.batch.decisions"], capture_output=True, text=True, check=True, timeout=120)
    answers = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    return {int(k): v for k, v in answers.items()}


def test_hostile_inputs_are_decided_as_by_opa(compiled: tuple[bytes, dict[str, Any]], tmp_path: Path) -> None:
    inputs = _hostile_inputs()
    by_opa = _opa_on_the_same_bytes(inputs, tmp_path)
    ours = _wasm_decisions(_connection(compiled), inputs)
    assert [_canonical(d) for d in ours] == [_canonical(by_opa.get(i)) for i in range(len(inputs))]
    assert any("\\u00ad" in json.dumps(d) for d in ours if d)  # %q escaped as Go does


# -- bundles ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SigningKey]:
    root = tmp_path_factory.mktemp("bundle")
    key = SigningKey.load_or_create(root / "keys")
    bundle = root / "bundle.tar.gz"
    build_bundle(DEFAULT_POLICY_DIR, bundle, key=key, revision="rev-a")
    return bundle, key


def _rewrite(blob: bytes, change: Any) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as src, tarfile.open(fileobj=out, mode="w:gz") as dst:
        for member in src:
            data = src.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            data = change(member.name, data)
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return out.getvalue()


def test_a_verified_bundle_gives_the_compiled_policy_and_its_revision(signed: tuple[Path, SigningKey]) -> None:
    bundle, key = signed
    artifact = load_verified(bundle.read_bytes(), public_key=key.public_path, key_id=key.key_id)
    assert artifact.revision == "rev-a" and artifact.wasm.startswith(b"\0asm")
    assert WASM_ROOT not in json.loads(artifact.data_json)
    connection = WasmConnection.from_artifact(artifact)
    assert asyncio.run(connection.get_data("jovial_guard_meta/revision")) == "rev-a"


def test_a_tampered_module_is_refused(signed: tuple[Path, SigningKey]) -> None:
    bundle, key = signed

    def flip(name: str, data: bytes) -> bytes:
        if name.lstrip("/") != "data.json":  # opa build merges all data into one file
            return data
        document = json.loads(data)
        module = bytearray(base64.b64decode(document[WASM_ROOT]["module"]))
        module[len(module) // 2] ^= 0xFF
        document[WASM_ROOT]["module"] = base64.b64encode(bytes(module)).decode()
        return json.dumps(document).encode()

    tampered = _rewrite(bundle.read_bytes(), flip)
    assert tampered != bundle.read_bytes()
    with pytest.raises(BundleError, match="failed verification"):
        load_verified(tampered, public_key=key.public_path, key_id=key.key_id)


def test_a_bundle_signed_with_another_key_is_refused(signed: tuple[Path, SigningKey], tmp_path: Path) -> None:
    bundle, _ = signed
    other = SigningKey.load_or_create(tmp_path / "other")
    with pytest.raises(BundleError):
        load_verified(bundle.read_bytes(), public_key=other.public_path, key_id=other.key_id)


def test_a_new_revision_swaps_the_module_and_a_bad_one_keeps_the_old(signed: tuple[Path, SigningKey], tmp_path: Path) -> None:
    bundle, key = signed
    live = tmp_path / "live.tar.gz"
    shutil.copy(bundle, live)
    connection = WasmConnection()
    watcher = BundleWatcher(connection, str(live), public_key=key.public_path, key_id=key.key_id)
    engine = PolicyEngine(connection)
    assert asyncio.run(watcher.refresh()) is True
    assert asyncio.run(engine.revision()) == "rev-a"
    build_bundle(DEFAULT_POLICY_DIR, live, key=key, revision="rev-b")
    assert asyncio.run(watcher.refresh()) is True
    assert asyncio.run(engine.revision()) == "rev-b"
    workload = workload_from_object(_pod({"name": "n", "image": "quay.io/jupyter/base-notebook:2024-05-27"}))
    assert asyncio.run(engine.decide(workload)).policy_revision == "rev-b"
    live.write_bytes(live.read_bytes()[:-100])  # a broken download
    assert asyncio.run(watcher.refresh()) is False and watcher.last_error
    assert asyncio.run(engine.revision()) == "rev-b"


# -- fail closed -----------------------------------------------------------------------------

def _decide(connection: WasmConnection, *, containers: int = 1) -> Any:
    image = "quay.io/jupyter/base-notebook:2024-05-27"
    pod = _pod({"name": "c0", "image": image})
    pod["spec"]["containers"] = [{"name": f"c{i}", "image": image} for i in range(containers)]
    return asyncio.run(PolicyEngine(connection).decide(workload_from_object(pod)))


def test_no_policy_loaded_denies() -> None:
    decision = _decide(WasmConnection())
    assert not decision.allowed and decision.reasons[0].rule == ENGINE_UNAVAILABLE


def test_a_failing_builtin_traps_and_denies(compiled: tuple[bytes, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    connection = _connection(compiled)

    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setitem(wasm_builtins.BUILTINS, "sprintf", broken)
    decision = _decide(connection)
    assert not decision.allowed and decision.reasons[0].rule == ENGINE_UNAVAILABLE
    assert "boom" in decision.reasons[0].message
    monkeypatch.undo()  # the next evaluation runs on a fresh instance and decides again
    assert all(r.rule != ENGINE_UNAVAILABLE for r in _decide(connection).reasons)


def test_a_missing_builtin_refuses_the_module(compiled: tuple[bytes, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(wasm_builtins.BUILTINS, "units.parse")
    with pytest.raises(PolicyEngineUnavailable, match="units.parse"):
        _connection(compiled)


def test_an_undefined_decision_denies(compiled: tuple[bytes, dict[str, Any]]) -> None:
    wasm, _ = compiled
    connection = WasmConnection.from_artifact(PolicyArtifact(wasm, b"{}", "empty"))
    decision = _decide(connection)
    assert not decision.allowed and decision.reasons[0].rule == ENGINE_UNAVAILABLE
    assert "undefined" in decision.reasons[0].message


def test_the_memory_cap_denies(compiled: tuple[bytes, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wasm_runtime, "MAX_PAGES", 64)  # 4 MiB
    connection = _connection(compiled)
    decision = _decide(connection, containers=3000)
    assert not decision.allowed and decision.reasons[0].rule == ENGINE_UNAVAILABLE
    monkeypatch.undo()


def test_the_deadline_interrupts_and_denies(compiled: tuple[bytes, dict[str, Any]]) -> None:
    connection = _connection(compiled, deadline=0.001)
    decision = _decide(connection, containers=2000)
    assert not decision.allowed and decision.reasons[0].rule == ENGINE_UNAVAILABLE
    assert "interrupt" in decision.reasons[0].message or "trapped" in decision.reasons[0].message


def test_the_bundle_service_is_followed_with_etags(signed: tuple[Path, SigningKey], tmp_path: Path) -> None:
    """A worker follows the chart's bundle service as the sidecar does: 304 while nothing
    changed, the new revision as soon as it is current."""
    from aiohttp.test_utils import TestServer

    from jovial_guard.policy.bundle_server import make_bundle_app

    bundle, key = signed
    next_bundle = tmp_path / "rev-b.tar.gz"
    build_bundle(DEFAULT_POLICY_DIR, next_bundle, key=key, revision="rev-b")

    class Store:
        revision = "rev-a"
        blobs = {"rev-a": bundle.read_bytes(), "rev-b": next_bundle.read_bytes()}

        def current(self) -> str | None:
            return self.revision

        def bundle_bytes(self, revision: str) -> bytes:
            return self.blobs[revision]

    async def scenario() -> None:
        store = Store()
        server = TestServer(make_bundle_app(store))
        await server.start_server()
        try:
            connection = WasmConnection()
            watcher = BundleWatcher(connection, str(server.make_url("/bundles/jovial_guard.tar.gz")),
                                    public_key=key.public_path, key_id=key.key_id)
            assert await watcher.refresh() is True and connection.revision == "rev-a"
            assert await watcher.refresh() is False and watcher.last_error is None  # 304 Not Modified
            store.revision = "rev-b"
            assert await watcher.refresh() is True and connection.revision == "rev-b"
        finally:
            await server.close()

    asyncio.run(scenario())


def test_a_worker_without_a_loadable_bundle_denies_and_says_why(tmp_path: Path, signed: tuple[Path, SigningKey]) -> None:
    _, key = signed
    connection = WasmConnection()
    watcher = BundleWatcher(connection, str(tmp_path / "missing.tar.gz"), public_key=key.public_path, key_id=key.key_id)
    assert asyncio.run(watcher.refresh()) is False
    assert watcher.last_error and "missing.tar.gz" in watcher.last_error
    with pytest.raises(PolicyEngineUnavailable, match="no verified policy bundle"):
        asyncio.run(PolicyEngine(connection).revision())
    decision = _decide(connection)
    assert not decision.allowed and decision.reasons[0].rule == ENGINE_UNAVAILABLE
