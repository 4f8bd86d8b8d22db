"""HTML for the dashboard, built from plain data with no I/O (tested against literals).

Why hand-written HTML: a few server-rendered pages need no template engine and no
JavaScript. Every value is escaped on the way in (``esc``); only ``Html`` (built here)
passes through unescaped. Pages use landmarks, a skip link, captions and ``scope`` on
table headers, labelled form fields, and colours above WCAG AA contrast.
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Iterable, Sequence

from ..policy.lifecycle import DryRunReport
from ..policy.store import HistoryEntry
from .model import AuditRow, Checks, DecisionRow, Grant, RevisionView, ServerRow


class Html(str):
    """Markup built by this module: inserted as is."""


NAV = (
    ("", "Policy"),
    ("history", "History"),
    ("denials", "Denials"),
    ("servers", "Servers"),
    ("audit", "Audit"),
    ("dry-run", "Dry-run"),
)

CSS = """
:root{color-scheme:light}
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1a1a1a;background:#fff}
a{color:#0b4f9c}a:focus,button:focus,input:focus{outline:3px solid #b35900;outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff;padding:.5rem}
header{background:#14304f;color:#fff;padding:.75rem 1.5rem}header a{color:#fff}
header h1{font-size:1.25rem;margin:0 0 .5rem}
nav ul{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:1rem}
nav a[aria-current=page]{font-weight:700;text-decoration:underline 3px}
main{padding:1rem 1.5rem;max-width:88rem}
table{border-collapse:collapse;margin:0 0 1.5rem;width:100%}
caption{text-align:left;font-weight:700;padding:.25rem 0}
th,td{border:1px solid #8a8a8a;padding:.3rem .5rem;text-align:left;vertical-align:top}
thead th{background:#e8edf3}tbody th{background:#f5f7fa;font-weight:600}
.ok{color:#0a6b2a;font-weight:700}.bad{color:#a3120b;font-weight:700}.muted{color:#555}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
pre{background:#f4f4f4;border:1px solid #ccc;padding:.5rem;overflow-x:auto;max-height:24rem}
.notice{border-left:4px solid #b35900;background:#fff6ec;padding:.5rem 1rem}
form{margin-bottom:1.25rem}label{font-weight:600;display:block}input[type=text]{width:min(40rem,100%);font:inherit;padding:.3rem}
button{font:inherit;padding:.35rem 1rem;background:#14304f;color:#fff;border:0;border-radius:3px;margin-top:.5rem}
"""


def esc(value: object) -> Html:
    """Escape anything for HTML text or attribute context; Html passes through."""
    if isinstance(value, Html):
        return value
    if value is None:
        return Html('<span class="muted">—</span>')
    return Html(html.escape(str(value), quote=True))


def when(ts: float | None) -> Html:
    """A UTC timestamp in a ``<time>`` element (machine-readable datetime attribute)."""
    if ts is None:
        return esc(None)
    moment = _dt.datetime.fromtimestamp(ts, _dt.UTC)
    return Html(f'<time datetime="{moment.isoformat()}">{moment.strftime("%Y-%m-%d %H:%M:%S")} UTC</time>')


def yes_no(value: bool | None, *, yes: str = "yes", no: str = "no") -> Html:
    """A status word, not colour alone, so it reads without colour too."""
    if value is None:
        return esc(None)
    return Html(f'<span class="{"ok" if value else "bad"}">{esc(yes if value else no)}</span>')


def table(caption: str, headers: Sequence[str], rows: Iterable[Sequence[object]], *,
          row_headers: bool = True, empty: str = "None.") -> Html:
    """A captioned table; the first cell of each row is a row header (``scope=row``)."""
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            tag = "th" if i == 0 and row_headers else "td"
            scope = ' scope="row"' if tag == "th" else ""
            cells.append(f"<{tag}{scope}>{esc(cell)}</{tag}>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        return Html(f"<p><strong>{esc(caption)}:</strong> {esc(empty)}</p>")
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    return Html(f"<table><caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>")


def page(title: str, body: str, *, active: str, prefix: str, user: str | None = None) -> Html:
    """The page frame: skip link, banner with navigation, main landmark."""
    links = []
    for path, label in NAV:
        current = ' aria-current="page"' if path == active else ""
        links.append(f'<li><a href="{esc(prefix + path)}"{current}>{esc(label)}</a></li>')
    who = f'<p class="muted" style="color:#dfe7f0;margin:.25rem 0 0">Signed in as {esc(user)}</p>' if user else ""
    return Html(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · jovial_guard admin</title><style>{CSS}</style></head><body>"
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><h1>jovial_guard admin</h1><nav aria-label="Dashboard"><ul>{"".join(links)}</ul></nav>{who}</header>'
        f'<main id="main"><h2>{esc(title)}</h2>{body}</main></body></html>'
    )


def error_page(status: int, message: str, *, prefix: str) -> Html:
    body = f'<p class="notice" role="alert">{esc(message)}</p>'
    return page(f"{status}: {_REASONS.get(status, 'Error')}", body, active="-", prefix=prefix)


_REASONS = {400: "Bad request", 403: "Forbidden", 404: "Not found", 500: "Server error"}


def checks_table(checks: Checks | None) -> Html:
    if checks is None:
        return esc("No checks recorded.")
    rows = [
        ("Lint (opa check --strict, opa fmt)", yes_no(checks.lint, yes="passed", no="FAILED")),
        ("Tests (opa test)", yes_no(checks.tests, yes="passed", no="FAILED")),
        ("Coverage", f"{checks.coverage:.1f}%" if checks.coverage is not None else None),
        ("Source of these results", checks.source),
    ]
    return table("Checks of the current revision", ("Check", "Result"), rows)


def revision_page(rev: RevisionView, *, decisions_by_revision: dict[str, int]) -> Html:
    """Overview: the revision OPA serves, its deploy entry and checks."""
    if rev.revision is None:
        return Html('<p class="notice" role="alert">No policy revision is active: every spawn is denied.</p>')
    rows: list[tuple[str, object]] = [
        ("Revision", Html(f"<code>{esc(rev.revision)}</code>")),
        ("Activated by", f"{rev.action or '?'} ({rev.actor or '?'})"),
        ("Activated at", when(rev.time)),
    ]
    switch = rev.details.get("switch_seconds")
    if switch is not None:
        rows.append(("OPA switch time", f"{float(switch):.3f} s"))
    dry = rev.details.get("dry_run")
    if isinstance(dry, dict):
        rows.append(("Dry-run at deploy", _dry_summary(dry)))
    if rev.details.get("source"):
        rows.append(("Source", rev.details["source"]))
    rows.append(("Decisions logged with it", decisions_by_revision.get(rev.revision, 0)))
    parts = [table("Current policy revision", ("Field", "Value"), rows), checks_table(rev.checks)]
    if rev.checks and rev.checks.report and not (rev.checks.lint and rev.checks.tests):
        parts.append(Html(f"<h3>Check report</h3><pre>{esc(rev.checks.report)}</pre>"))
    return Html("".join(parts))


def _dry_summary(dry: dict[str, object]) -> str:
    denied = ", ".join(map(str, dry.get("newly_denied") or [])) or "nobody"  # type: ignore[call-overload]
    allowed = ", ".join(map(str, dry.get("newly_allowed") or [])) or "nobody"  # type: ignore[call-overload]
    return f"{dry.get('inputs', 0)} inputs; newly denied: {denied}; newly allowed: {allowed}"


def history_page(entries: Sequence[HistoryEntry], *, current: str | None) -> Html:
    """Newest first: who deployed / rolled back / was refused, when, with which checks."""
    rows = []
    for e in reversed(entries):
        d = e.details
        checks = []
        if "lint" in d:
            checks.append(f"lint {'ok' if d['lint'] else 'FAILED'}")
        if "tests" in d:
            checks.append(f"tests {'ok' if d['tests'] else 'FAILED'}")
        if d.get("coverage") is not None:
            checks.append(f"coverage {float(d['coverage']):.1f}%")
        if d.get("problems"):
            checks.append("probe: " + "; ".join(map(str, d["problems"])))
        if d.get("seeded"):
            checks.append("seeded at start-up")
        mark = " (current)" if e.revision == current and e.action in ("deploy", "rollback") else ""
        rows.append((e.seq, when(e.time), e.action, e.actor, Html(f"<code>{esc(e.revision)}</code>{esc(mark)}"),
                     Html(f"<code>{esc(e.previous)}</code>") if e.previous else None, "; ".join(checks) or None))
    return table("Policy history (newest first; hash-chained, verified on read)",
                 ("#", "Time", "Action", "Actor", "Revision", "Previous", "Checks"), rows,
                 empty="No deploys recorded.")


def reasons_list(reasons: Sequence[object]) -> Html:
    items = "".join(f"<li><code>{esc(getattr(r, 'rule', ''))}</code>: {esc(getattr(r, 'message', ''))}</li>" for r in reasons)
    return Html(f"<ul>{items}</ul>") if items else esc(None)


def denials_page(rows: Sequence[DecisionRow], *, user_filter: str | None = None) -> Html:
    """Recent denials (newest first), grouped per user in a summary table and listed."""
    denied = [r for r in rows if not r.allowed]
    per_user: dict[str, int] = {}
    for r in denied:
        per_user[r.user or "?"] = per_user.get(r.user or "?", 0) + 1
    form = (
        '<form method="get" action="denials"><label for="user">Show one user</label>'
        f'<input type="text" id="user" name="user" value="{esc(user_filter or "")}" autocomplete="off">'
        '<button type="submit">Filter</button></form>'
    )
    summary = table("Denials per user", ("User", "Denials"), sorted(per_user.items()), empty="No denials recorded.")
    listing = table(
        "Recent denials (newest first)",
        ("User", "Time", "Origin", "Profile", "Reasons", "Policy revision"),
        [(r.user, when(r.time), r.origin, r.profile, reasons_list(r.reasons), Html(f"<code>{esc(r.revision)}</code>"))
         for r in sorted(denied, key=lambda r: r.time, reverse=True)],
        empty="No denials recorded.",
    )
    return Html(form + summary + listing)


def _grant_text(g: Grant) -> str:
    exp = _dt.datetime.fromtimestamp(g.expires, _dt.UTC).strftime("%H:%M:%S UTC") if g.expires else "?"
    return f"{g.fileset} at {g.mount_path} ({g.mode}), serial {g.serial}, expires {exp}"


def servers_page(servers: Sequence[ServerRow]) -> Html:
    """One table per server: its status and every piece of hardening the hook applied."""
    if not servers:
        return Html("<p>No servers are running.</p>")
    parts = [table("Running servers", ("User", "Server", "Status", "Profile", "Policy revision", "Attestation"),
                   [(s.user, s.server_name or "(default)", "ready" if s.ready else (s.pending or "stopped"),
                     s.profile, Html(f"<code>{esc(s.revision)}</code>") if s.revision else None,
                     s.attestation) for s in servers])]
    for s in servers:
        label = f"{s.user}/{s.server_name}" if s.server_name else s.user
        if not s.hardening_recorded:
            parts.append(Html(f'<h3>{esc(label)}</h3><p class="notice">No hardening record for this server '
                              "(started before the dashboard's recorder, or still starting).</p>"))
            continue
        rows = [
            ("Seccomp", s.seccomp),
            ("Read-only root filesystem", yes_no(s.read_only_root)),
            ("No new privileges", yes_no(s.no_new_privileges)),
            ("Capabilities dropped", ", ".join(s.capabilities_drop) or None),
            ("Capabilities added", ", ".join(s.capabilities_add) or "none"),
            ("AppArmor", s.apparmor),
            ("Network", s.network_mode),
            ("Storage grant", _grant_text(s.storage) if s.storage else "none"),
            ("Active grants (credentials store)", "; ".join(_grant_text(g) for g in s.grants) or "none"),
            ("Decision", s.decision_id),
            ("Live attestation", s.attestation),
        ]
        parts.append(Html(f'<section aria-labelledby="srv-{esc(label)}"><h3 id="srv-{esc(label)}">{esc(label)}</h3>'))
        parts.append(table(f"Hardening applied to {label}", ("Control", "Applied"), rows))
        if s.egress_rules is not None:
            parts.append(Html(f"<h4>Egress rules (nft ruleset in {esc(label)}'s namespace)</h4>"
                              f"<pre>{esc(s.egress_rules)}</pre>"))
        else:
            parts.append(Html(f'<p class="notice">Egress rules unavailable: {esc(s.egress_error or "unknown")}</p>'))
        parts.append(Html("</section>"))
    return Html("".join(parts))


def audit_page(rows: Sequence[AuditRow], *, configured: bool, directory: str | None) -> Html:
    if not configured:
        where = f" at <code>{esc(directory)}</code>" if directory else ""
        return Html(f'<p class="notice">No audit log{where} for this hub: run <code>jovial-guard audit serve '
                    "--dir</code> there, or set <code>JOVIAL_GUARD_AUDIT_DIR</code> to its directory "
                    "(docs/audit.md).</p>")
    events = [r for r in rows if r.kind != "response"]
    responses = [r for r in rows if r.kind == "response"]
    head = Html(f"<p>Records from <code>{esc(directory)}</code>, newest first (not verified here: "
                "run <code>jovial-guard audit verify</code>).</p>")
    cols = ("#", "Time", "Kind", "User", "Rule", "Priority")
    ev = table("Audit events", cols, [(r.seq, r.ts, r.kind, r.user, r.rule, r.priority) for r in events],
               empty="No audit events.")
    rs = table("Responses", ("#", "Time", "User", "Action / rule", "Outcome"),
               [(r.seq, r.ts, r.user, r.rule, r.outcome) for r in responses], empty="No responses.")
    return Html(head + ev + rs)


def dry_run_form(candidate: str = "") -> Html:
    return Html(
        '<form method="get" action="dry-run">'
        '<label for="candidate">Candidate policy directory (server-side path)</label>'
        '<p id="candidate-help" class="muted">An absolute path to a directory with .rego files and data.json, '
        "replayed against every recorded decision input with the current revision as baseline.</p>"
        f'<input type="text" id="candidate" name="candidate" value="{esc(candidate)}" '
        'aria-describedby="candidate-help" required autocomplete="off">'
        "<button type=\"submit\">Run dry-run</button></form>"
    )


def dry_run_page(candidate: str, report: DryRunReport | None, *, error: str | None = None,
                 baseline: str | None = None) -> Html:
    parts = [dry_run_form(candidate)]
    if error:
        parts.append(Html(f'<p class="notice" role="alert">{esc(error)}</p>'))
    if report is None:
        return Html("".join(parts))
    s = report.summary()
    parts.append(table("Dry-run summary", ("Measure", "Value"), [
        ("Baseline revision", Html(f"<code>{esc(baseline)}</code>")),
        ("Recorded workloads replayed", s["inputs"]),
        ("Unchanged", s["unchanged"]),
        ("Would change", s["changes"]),
        ("Newly denied users", ", ".join(s["newly_denied"]) or "nobody"),
        ("Newly allowed users", ", ".join(s["newly_allowed"]) or "nobody"),
        ("Inputs that could not be decided", s["errors"]),
    ]))
    parts.append(table("Changes", ("User", "Change", "Workload", "Reasons"), [
        (c.user, c.direction, c.workload,
         reasons_list([_R(**r) for r in (c.reasons_after or c.reasons_before)]))
        for c in report.changes
    ], empty="No recorded workload would change."))
    return Html("".join(parts))


class _R:
    def __init__(self, rule: str = "", message: str = "", **_: object) -> None:
        self.rule, self.message = rule, message
