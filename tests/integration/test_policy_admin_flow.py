"""The policy admin's workflow, end to end on the running embedded hub, as docs/admin.md tells an
admin to do it: record decisions by spawning, dry-run a changed policy, deploy it, watch
a spawn that was denied get the new decision (with the new revision in the hub's decision
log), roll back, and the spawn is denied again.

While the deploy switches OPA's bundle, a watcher thread asks the running OPA every 20 ms
about a recorded known-good spawn and about the changing one: no request may fail or deny
the known-good one, and the changing one flips exactly once. The deploy-to-effect time
(store activation to the first answer from the new revision) is written to
tests/artifacts/policy-deploy-timing.json and printed; it is measured, not asserted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from jovial_guard.policy.decision_log import DecisionLog, DecisionRecord
from jovial_guard.policy.store import PolicyStore

from .conftest import EmbeddedHub, SpawnFailed

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
USER, GROUP, OK_USER = "flowuser", "flowgroup", "flowok"


def _cli(hub: EmbeddedHub, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`jovial-guard policy ...` as the admin runs it next to `jovial-guard up`."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("JOVIAL_GUARD_OPA_URL", "JOVIAL_GUARD_POLICY_STORE", "JOVIAL_GUARD_DECISION_LOG")}
    env.update({"JOVIAL_GUARD_HUB_STATE_DIR": str(hub.state_dir), "JOVIAL_GUARD_ACTOR": "flow-test-admin"})
    return subprocess.run([sys.executable, "-m", "jovial_guard", "policy", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)


def _last(hub: EmbeddedHub, user: str, *, after: float) -> DecisionRecord:
    records = [r for r in DecisionLog(hub.state_dir / "decisions.jsonl").records(user=user) if r.time >= after]
    if not records:
        raise AssertionError(f"no decision for {user} in the hub's decision log since {after}")
    return records[-1]


class Watcher(threading.Thread):
    """Asks the running OPA about two recorded inputs every 20 ms; keeps every answer."""

    def __init__(self, opa_url: str, good: dict[str, Any], changing: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.url = opa_url.rstrip("/") + "/v1/data/jovial_guard/main/decision"
        self.inputs = {"good": good, "changing": changing}
        self.answers: list[tuple[float, str, bool | None, str | None, str | None]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        while not self.stop_event.is_set():
            for name, doc in self.inputs.items():
                try:
                    resp = session.post(self.url, json={"input": doc}, timeout=2)
                    result = resp.json().get("result") if resp.status_code == 200 else None
                    if not isinstance(result, dict):
                        self.answers.append((time.time(), name, None, None, f"HTTP {resp.status_code}"))
                        continue
                    self.answers.append((time.time(), name, bool(result.get("allowed")),
                                         str(result.get("revision")), None))
                except (requests.RequestException, ValueError) as exc:
                    self.answers.append((time.time(), name, None, None, type(exc).__name__))
            self.stop_event.wait(0.02)


def _candidate(tmp_path: Path, source: Path) -> Path:
    """The admin's edit of the deployed policy: large-memory is opened to one more group."""
    candidate = tmp_path / "candidate-policies"
    shutil.copytree(source, candidate)
    data = json.loads((candidate / "data.json").read_text())
    data["settings"]["profiles"]["large-memory"]["groups"].append(GROUP)
    (candidate / "data.json").write_text(json.dumps(data, indent=2) + "\n")
    return candidate


def test_change_dry_run_deploy_spawn_rollback(embedded_hub: EmbeddedHub, tmp_path: Path) -> None:
    hub = embedded_hub
    store_current = hub.state_dir / "policy-store" / "current"
    original = store_current.read_text().strip()
    runtime = json.loads((hub.state_dir / "runtime.json").read_text())
    started = time.time()

    # 1. Traffic to replay: a known-good spawn, and one the policy denies.
    hub.spawn(OK_USER, profile="default", groups=())
    hub.stop(OK_USER)
    with pytest.raises(SpawnFailed) as denied:
        hub.spawn(USER, profile="large-memory", groups=(GROUP,))
    assert denied.value.status == 403
    before = _last(hub, USER, after=started)
    assert not before.allowed and before.policy_revision == original
    good = _last(hub, OK_USER, after=started)
    assert good.allowed

    candidate = _candidate(tmp_path, PolicyStore(hub.state_dir / "policy-store").source_dir(original))
    try:
        # 2. The dry-run names exactly the user whose outcome changes.
        dry = _cli(hub, "dry-run", str(candidate), "--since", "1h", "--json")
        assert dry.returncode == 0, dry.stderr
        report = json.loads(dry.stdout)
        assert report["newly_allowed"] == [USER], report
        assert report["newly_denied"] == [], report
        text = _cli(hub, "dry-run", str(candidate), "--since", "1h")
        assert f"denied -> allowed: user={USER}" in text.stdout, text.stdout

        # 3. Deploy while the watcher asks OPA all the time.
        watcher = Watcher(runtime["opa_url"], good.input, before.input)
        watcher.start()
        time.sleep(0.3)
        deploy = _cli(hub, "deploy", str(candidate), "--since", "1h")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(  # a few answers after the switch, too
                a[1] == "changing" and a[2] for a in watcher.answers[-10:]):
            time.sleep(0.05)
        time.sleep(0.2)
        watcher.stop_event.set()
        watcher.join(timeout=10)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        new = store_current.read_text().strip()
        assert new != original and f"deployed {new}" in deploy.stdout, deploy.stdout
        activated = store_current.stat().st_mtime

        failures = [a for a in watcher.answers if a[4] is not None]
        good_denied = [a for a in watcher.answers if a[1] == "good" and a[2] is False]
        assert not failures, failures[:5]
        assert not good_denied, good_denied[:5]
        changing = [a for a in watcher.answers if a[1] == "changing"]
        flips = [i for i in range(1, len(changing)) if changing[i][2] != changing[i - 1][2]]
        assert len(flips) == 1 and changing[0][2] is False and changing[-1][2] is True, changing[:3]
        assert {a[3] for a in changing[:flips[0]]} == {original}
        assert {a[3] for a in changing[flips[0]:]} == {new}
        effect = changing[flips[0]][0] - activated

        # 4. The spawn that was denied now gets the new decision.
        spawn_started = time.time()
        hub.spawn(USER, profile="large-memory", groups=(GROUP,))
        after = _last(hub, USER, after=spawn_started)
        assert after.allowed and after.policy_revision == new
        hub.stop(USER)

        # 5. Roll back: denied again, by the original revision.
        back = _cli(hub, "rollback")
        assert back.returncode == 0, back.stdout + back.stderr
        assert store_current.read_text().strip() == original
        rollback_started = time.time()
        with pytest.raises(SpawnFailed) as again:
            hub.spawn(USER, profile="large-memory", groups=(GROUP,))
        assert again.value.status == 403
        final = _last(hub, USER, after=rollback_started)
        assert not final.allowed and final.policy_revision == original

        history = _cli(hub, "history")
        assert "deploy" in history.stdout and "rollback" in history.stdout

        # 6. The dashboard tells the same story (admin token; the browser test covers login).
        token = hub.api("POST", "/users/guardadmin/tokens", json={"note": "flow", "expires_in": 600}).json()["token"]
        dash = hub.url + "/services/jovial-guard-dashboard/"
        page = requests.get(dash + "history", headers={"Authorization": f"token {token}"}, timeout=30).text
        assert f"<code>{new}</code>" in page and "flow-test-admin" in page
        assert page.index("<td>rollback</td>") < page.index("<td>deploy</td>")  # newest first
        page = requests.get(dash + "denials", params={"user": USER},
                            headers={"Authorization": f"token {token}"}, timeout=30).text
        assert re.search(rf'<th scope="row">{USER}</th><td>2</td>', page), page[-3000:]

        timing = {
            "deploy_to_effect_seconds": round(effect, 3),
            "watcher_requests": len(watcher.answers),
            "failed_requests": len(failures),
            "known_good_denied": len(good_denied),
            "deploy_command_output": deploy.stdout.strip().splitlines()[-1],
            "revision_before": original,
            "revision_after": new,
        }
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "policy-deploy-timing.json").write_text(json.dumps(timing, indent=2) + "\n")
        print(f"\npolicy deploy-to-effect: {effect:.3f} s ({len(watcher.answers)} OPA requests during the "
              f"switch, {len(failures)} failed, {len(good_denied)} known-good denied)")
    finally:
        if store_current.read_text().strip() != original:
            _cli(hub, "rollback", original)
        for user in (USER, OK_USER):
            try:
                hub.stop(user)
            except Exception:  # noqa: BLE001, S110 - best effort; the fixture cleans up too
                pass
