"""The dashboard's builders and readers against literal inputs (no hub, no browser).

Rendering: every value escaped, accessible structure (landmarks, captions, scoped headers,
labels, status words beside colour), the right rows on each page. Readers: both decision
log formats, hardening records, candidate validation (fail closed), the admin gate, the
policy store's current revision and checks, a real audit log.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jupyterhub.services.auth import UserNotAllowed

from jovial_guard.audit.log import AuditLog
from jovial_guard.dashboard import render
from jovial_guard.dashboard.app import require_admin
from jovial_guard.dashboard.model import (
    AuditRow,
    Checks,
    DecisionRow,
    Grant,
    Reason,
    RevisionView,
    ServerRow,
)
from jovial_guard.dashboard.recorder import (
    hardening_recorder,
    read_records,
    write_record,
)
from jovial_guard.dashboard.sources import (
    CandidateInvalid,
    audit_rows,
    current_revision,
    decision_rows,
    validate_candidate,
)
from jovial_guard.policy.lifecycle import Change, DryRunReport
from jovial_guard.policy.store import HistoryEntry, PolicyStore

REPO = Path(__file__).resolve().parents[2]
T0 = 1796014800.0  # 2026-11-30 05:00:00 UTC
EVIL = '<script>alert("x")</script>'


def _tables_well_formed(html: str) -> None:
    """Each table has a caption and column headers with scope."""
    for table in re.findall(r"(?s)<table>.*?</table>", html):
        assert "<caption>" in table
        assert '<th scope="col">' in table


# -- page frame and helpers --------------------------------------------------------------

def test_page_frame_is_accessible_and_marks_the_current_page() -> None:
    html = render.page("Recent denials", "<p>x</p>", active="denials", prefix="/services/d/", user="admin")
    assert html.startswith("<!doctype html>") and '<html lang="en">' in html
    assert '<a class="skip" href="#main">' in html and '<main id="main">' in html
    assert '<nav aria-label="Dashboard">' in html
    assert '<a href="/services/d/denials" aria-current="page">Denials</a>' in html
    assert html.count('aria-current="page"') == 1
    assert "<script" not in html.lower()
    assert "Signed in as admin" in html


def test_everything_is_escaped() -> None:
    assert render.esc(EVIL) == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    assert render.esc(render.Html("<b>ok</b>")) == "<b>ok</b>"
    html = render.page(EVIL, "", active="", prefix="/p/", user=EVIL)
    assert EVIL not in html
    rows = [DecisionRow(T0, EVIL, "spawn", EVIL, False, (Reason(EVIL, EVIL),), EVIL)]
    assert EVIL not in render.denials_page(rows, user_filter=EVIL)


def test_table_has_caption_scoped_headers_and_an_empty_message() -> None:
    html = render.table("Things", ("Name", "Value"), [("a", 1), ("b", None)])
    assert "<caption>Things</caption>" in html
    assert '<th scope="col">Name</th>' in html and '<th scope="row">a</th>' in html
    assert '<span class="muted">—</span>' in html
    assert render.table("Things", ("Name",), [], empty="Nothing here.") == \
        "<p><strong>Things:</strong> Nothing here.</p>"


def test_when_is_machine_readable_utc() -> None:
    assert render.when(T0) == '<time datetime="2026-11-30T05:00:00+00:00">2026-11-30 05:00:00 UTC</time>'


def test_status_is_a_word_not_only_a_colour() -> None:
    assert render.yes_no(True) == '<span class="ok">yes</span>'
    assert render.yes_no(False, no="FAILED") == '<span class="bad">FAILED</span>'


def test_error_page_says_forbidden() -> None:
    html = render.error_page(403, "admins only", prefix="/p/")
    assert "<title>403: Forbidden" in html and 'role="alert">admins only' in html


# -- policy pages ------------------------------------------------------------------------

def test_revision_page_shows_revision_deploy_and_checks() -> None:
    rev = RevisionView("sha256:abc", action="deploy", time=T0, actor="alice",
                       checks=Checks(True, False, 87.5, "recorded at deploy", "FAIL: test_x"),
                       details={"switch_seconds": 0.21, "dry_run": {"inputs": 4, "newly_denied": ["bob"],
                                                                    "newly_allowed": []}})
    html = render.revision_page(rev, decisions_by_revision={"sha256:abc": 7})
    text = re.sub(r"<[^>]+>", " ", html)
    assert "sha256:abc" in text and "deploy (alice)" in text and "0.210 s" in text
    assert "newly denied: bob; newly allowed: nobody" in text
    assert re.search(r"Decisions logged with it\s+7", text)
    assert '<span class="ok">passed</span>' in html and '<span class="bad">FAILED</span>' in html
    assert "87.5%" in text and "FAIL: test_x" in text  # the report is shown when a check failed
    _tables_well_formed(html)


def test_no_active_revision_is_an_alert() -> None:
    html = render.revision_page(RevisionView(None), decisions_by_revision={})
    assert 'role="alert"' in html and "every spawn is denied" in html


def test_history_is_newest_first_with_checks_and_current_mark() -> None:
    entries = [
        HistoryEntry(1, T0, "up", "deploy", "sha256:a", None, {"seeded": True}, "0", "h1"),
        HistoryEntry(2, T0 + 60, "alice", "deploy", "sha256:b", "sha256:a",
                     {"lint": True, "tests": True, "coverage": 99.7}, "h1", "h2"),
        HistoryEntry(3, T0 + 120, "alice", "refused", "-", "sha256:b", {"lint": False, "tests": True}, "h2", "h3"),
    ]
    html = render.history_page(entries, current="sha256:b")
    assert html.index("refused") < html.index("lint ok; tests ok; coverage 99.7%") < html.index("seeded at start-up")
    assert "sha256:b</code> (current)" in html and "lint FAILED" in html
    _tables_well_formed(html)


def test_denials_page_counts_per_user_and_lists_reasons_newest_first() -> None:
    rows = [
        DecisionRow(T0, "bob", "spawn", "gpu", False, (Reason("profiles/not-allowed", "gpu is for gpu-users"),), "r1"),
        DecisionRow(T0 + 1, "alice", "spawn", "default", True, (), "r1"),
        DecisionRow(T0 + 2, "bob", "spawn", "large-memory", False, (Reason("profiles/not-allowed", "8Gi"),), "r1"),
    ]
    html = render.denials_page(rows)
    assert re.search(r'<th scope="row">bob</th><td>2</td>', html)
    assert "alice" not in html  # allowed decisions are not denials
    assert html.index("large-memory") < html.index("gpu is for gpu-users")
    assert "<code>profiles/not-allowed</code>: gpu is for gpu-users" in html
    assert '<label for="user">' in html and 'id="user"' in html
    _tables_well_formed(html)


# -- servers, audit, dry-run -------------------------------------------------------------

def _server(**kwargs: object) -> ServerRow:
    base = dict(  # noqa: C408 - keyword form mirrors ServerRow's fields
        user="alice", server_name="", ready=True, pending=None, started=None, hardening_recorded=True,
                profile="default", revision="sha256:a", decision_id="d1", seccomp="profile: notebook.json, status: applied",
                read_only_root=True, no_new_privileges=True, capabilities_drop=("ALL",), network_mode="ns:/run/netns/x",
                egress_rules='table inet jovial_guard { comment "<b>" }',
                storage=Grant("s1", "projects/astro", "ro", "/lustre/project", T0))
    base.update(kwargs)
    return ServerRow(**base)  # type: ignore[arg-type]


def test_servers_page_shows_applied_hardening() -> None:
    html = render.servers_page([_server()])
    text = re.sub(r"<[^>]+>", " ", html)
    assert re.search(r"Read-only root filesystem\s+yes", text)
    assert re.search(r"Seccomp\s+profile: notebook.json, status: applied", text)
    assert re.search(r"Capabilities dropped\s+ALL", text)
    assert "projects/astro at /lustre/project (ro), serial s1, expires 05:00:00 UTC" in text
    assert "<pre>table inet jovial_guard { comment &quot;&lt;b&gt;&quot; }</pre>" in html
    _tables_well_formed(html)


def test_servers_page_says_what_is_missing() -> None:
    html = render.servers_page([_server(hardening_recorded=False), _server(user="bob", egress_rules=None,
                                                                           egress_error="no namespace")])
    assert "No hardening record for this server" in html
    assert "Egress rules unavailable: no namespace" in html
    assert render.servers_page([]) == "<p>No servers are running.</p>"
    assert re.search(r"Read-only root filesystem</th><td><span class=\"bad\">no", render.servers_page(
        [_server(read_only_root=False)]))


def test_audit_page_splits_events_and_responses() -> None:
    rows = [AuditRow(2, "2026-11-30T05:00:01Z", "response", "bob", "stop_server by shell", "Warning", "done"),
            AuditRow(1, "2026-11-30T05:00:00Z", "falco", "bob", "Terminal shell in container", "Notice", "")]
    html = render.audit_page(rows, configured=True, directory="/var/audit")
    events, responses = html.split("<caption>Responses</caption>")
    assert "Terminal shell in container" in events and "stop_server" not in events
    assert "stop_server by shell" in responses and "<td>done</td>" in responses
    assert "JOVIAL_GUARD_AUDIT_DIR" in render.audit_page([], configured=False, directory=None)


def test_dry_run_page_lists_changes_with_reasons() -> None:
    report = DryRunReport(inputs=3, unchanged=2, changes=[
        Change("bob", "spawn:Pod/ns/jupyter-bob profile=gpu", False, True,
               [{"rule": "profiles/not-allowed", "message": "no"}], [])])
    html = render.dry_run_page("/tmp/cand", report, baseline="sha256:a")
    text = re.sub(r"<[^>]+>", " ", html)
    assert re.search(r"Newly allowed users\s+bob", text) and re.search(r"Newly denied users\s+nobody", text)
    assert "denied -&gt; allowed" in html and "profiles/not-allowed" in html
    assert '<label for="candidate">' in html and 'value="/tmp/cand"' in html
    _tables_well_formed(html)
    refused = render.dry_run_page("rel", None, error="not absolute")
    assert 'role="alert">not absolute' in refused and "Dry-run summary" not in refused


# -- readers -----------------------------------------------------------------------------

def test_decision_rows_reads_both_log_formats_and_skips_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    legacy = {"version": 1, "time": T0, "origin": "spawn", "user": "bob", "groups": [], "profile": "gpu",
              "allowed": False, "rules": ["profiles/not-allowed"], "message": "gpu is for gpu-users",
              "policy_revision": "r1", "decision_id": "d1", "workload_digest": "x", "seconds": 0.01}
    current = {"time": T0 + 5, "decision_id": "d2", "origin": "spawn", "user": "carol", "input_digest": "y",
               "allowed": False, "reasons": [{"rule": "images/not-allowed", "message": "image"}],
               "policy_revision": "r2", "latency_ms": 3.0,
               "input": {"workload": {"profile": "default", "origin": "spawn"}}}
    path.write_text(json.dumps(legacy) + "\n" + json.dumps(current) + "\n" + '{"torn": ')
    rows = decision_rows(path, since=T0 - 1)
    assert [(r.user, r.profile, r.revision) for r in rows] == [("bob", "gpu", "r1"), ("carol", "default", "r2")]
    assert rows[0].reasons == (Reason("profiles/not-allowed", "gpu is for gpu-users"),)
    assert [r.user for r in decision_rows(path, since=T0 - 1, user="carol")] == ["carol"]
    assert decision_rows(tmp_path / "missing.jsonl") == []


def test_hardening_records_round_trip_and_skip_foreign_files(tmp_path: Path) -> None:
    class User:
        name = "al/ice"

    class Spawner:
        user = User()
        name = ""

    directory = tmp_path / "hardening"
    hardening_recorder(directory)(Spawner(), {"profile": "default", "hardening": {"read_only_root": True}})
    write_record(directory, user="bob", server="gpu", record={"profile": "gpu"}, now=T0)
    (directory / "foreign.json").write_text('{"v": 99, "record": {}}')
    (directory / "torn.json").write_text("{")
    records = read_records(directory)
    assert records == {("al/ice", ""): {"profile": "default", "hardening": {"read_only_root": True}},
                       ("bob", "gpu"): {"profile": "gpu"}}
    for path in directory.glob("*.json"):
        if path.name not in ("foreign.json", "torn.json"):
            assert (path.stat().st_mode & 0o777) == 0o600
    assert read_records(tmp_path / "none") == {}


@pytest.mark.parametrize("text, problem", [
    ("", "Enter the absolute path"),
    ("policies", "not an absolute path"),
    ("/nonexistent/dir", "does not exist"),
    ("/etc/hostname", "not a directory"),
    ("/a\x00b", "not a usable path"),
])
def test_candidate_validation_refuses(text: str, problem: str) -> None:
    with pytest.raises(CandidateInvalid, match=problem):
        validate_candidate(text)


def test_candidate_without_rego_is_refused_and_a_policy_dir_accepted(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(CandidateInvalid, match="no .rego files"):
        validate_candidate(str(tmp_path))
    assert validate_candidate(str(REPO / "policies")) == (REPO / "policies").resolve()
    link = tmp_path / "link"
    os.symlink(REPO / "policies", link)
    assert validate_candidate(f" {link} ") == (REPO / "policies").resolve()


def test_only_admin_users_pass_the_gate() -> None:
    assert require_admin({"kind": "user", "name": "root", "admin": True})["name"] == "root"
    for model in ({"kind": "user", "name": "bob", "admin": False}, {"kind": "user", "name": "bob"},
                  {"kind": "service", "name": "svc", "admin": True}, {"name": "x", "admin": "yes"}, None):
        with pytest.raises(UserNotAllowed):
            require_admin(model)  # type: ignore[arg-type]


def test_current_revision_uses_recorded_checks_else_measured(tmp_path: Path) -> None:
    store = PolicyStore(tmp_path / "store")
    assert current_revision(store, measured={}).revision is None
    src = tmp_path / "policies"
    shutil.copytree(REPO / "policies", src)
    revision = store.add(src)
    store.activate(revision)
    store.record("deploy", revision, previous=None, actor="up", details={"seeded": True})
    measured = {revision: Checks(True, True, 99.0, "run by the dashboard")}
    view = current_revision(store, measured=measured)
    assert view.revision == revision and view.actor == "up" and view.checks == measured[revision]
    store.record("deploy", revision, previous=revision, actor="alice",
                 details={"lint": True, "tests": True, "coverage": 98.5, "switch_seconds": 0.2})
    view = current_revision(store, measured={})
    assert view.actor == "alice" and view.checks == Checks(True, True, 98.5, "recorded at deploy")
    assert view.details["switch_seconds"] == 0.2


def test_audit_rows_from_a_real_log_newest_first(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    log = AuditLog(tmp_path, key=key, checkpoint_every=10, checkpoint_interval=3600)
    log.open()
    log.append_many([
        orjson.dumps({"v": 1, "ts": "2026-11-30T04:00:00.000000Z", "kind": "falco", "rule": "old",
                      "priority": "Notice", "user": "bob"}),
        orjson.dumps({"v": 1, "ts": "2026-11-30T05:00:00.000000Z", "kind": "falco",
                      "rule": "Terminal shell in container", "priority": "Notice", "user": "bob"}),
        orjson.dumps({"v": 1, "ts": "2026-11-30T05:00:01.000000Z", "kind": "response", "rule": "response stop_server",
                      "priority": "Warning", "user": "bob",
                      "fields": {"trigger_record": 2, "response_rule": "shell", "action": "stop_server",
                                 "outcome": "done", "trigger_rule": "Terminal shell in container"}}),
    ])
    log.close()
    now = _dt.datetime(2026, 11, 30, 5, 30, tzinfo=_dt.UTC)
    rows = audit_rows(tmp_path, since_hours=1, now=now)
    assert [(r.seq, r.kind) for r in rows] == [(3, "response"), (2, "falco")]
    assert rows[0].outcome == "done"
    assert rows[0].rule == "stop_server by shell on Terminal shell in container (record 2)"
    assert audit_rows(None) == [] and audit_rows(tmp_path / "missing") == []


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _css_colour(selector: str, prop: str) -> str:
    block = re.search(re.escape(selector) + r"\{([^}]*)\}", render.CSS)
    assert block, selector
    match = re.search(rf"(?:^|;){prop}:#([0-9a-f]{{6}}|[0-9a-f]{{3}})\b", block.group(1))
    assert match, (selector, prop)
    digits = match.group(1)
    return "#" + (digits if len(digits) == 6 else "".join(c * 2 for c in digits))


def test_colours_meet_wcag_aa_contrast() -> None:
    """Text colours from the stylesheet against their backgrounds: at least 4.5:1."""
    white = "#ffffff"
    header = _css_colour("header", "background")
    signed_in = re.search(r'style="color:(#[0-9a-f]{6})', render.page("t", "", active="", prefix="/", user="u"))
    pairs = {
        "body": (_css_colour("body", "color"), _css_colour("body", "background")),
        "link": (_css_colour("a", "color"), white),
        "ok": (_css_colour(".ok", "color"), white),
        "bad": (_css_colour(".bad", "color"), white),
        "muted": (_css_colour(".muted", "color"), white),
        "header": (white, header),
        "signed-in": (signed_in.group(1) if signed_in else "", header),
        "table head": (_css_colour("body", "color"), _css_colour("thead th", "background")),
        "button": (white, _css_colour("button", "background")),
        "notice": (_css_colour("body", "color"), _css_colour(".notice", "background")),
    }
    for name, (fg, bg) in pairs.items():
        assert _contrast(fg, bg) >= 4.5, (name, fg, bg, round(_contrast(fg, bg), 2))


def test_servers_show_the_latest_attestation(tmp_path: Path) -> None:
    from jovial_guard.attest.status import ServerAttestation, write_status
    from jovial_guard.dashboard.sources import Settings, server_rows

    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    write_status(audit_dir, [ServerAttestation("alice", "", 1000.0, "drift: ruleset",
                                               ({"kind": "ruleset", "detail": "ruleset of jg-u-alice changed"},)),
                             ServerAttestation("bob", "", 1003.0, "ok")], now=1003.0)
    settings = Settings(state_dir=tmp_path, hub_api_url="http://127.0.0.1:1/hub/api", api_token="t",
                        audit_dir=audit_dir)
    servers = [{"user": u, "name": "", "ready": True, "pending": None, "started": None} for u in ("alice", "bob", "carol")]
    rows = server_rows(settings, servers, read_egress=False, now=1005.0)
    assert [r.attestation for r in rows] == [
        "attested 5 s ago: drift: ruleset (ruleset of jg-u-alice changed)", "attested 2 s ago: ok", "not attested yet"]
    assert "attested 2 s ago: ok" in render.servers_page(rows)
