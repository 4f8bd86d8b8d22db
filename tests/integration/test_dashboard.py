"""The admin dashboard in a real headless Chromium against the embedded hub.

As the admin (through the hub's login form and OAuth): the current revision with its
checks, a denial this test caused with its reason, a running server with its applied
hardening (seccomp, read-only root, the live nft ruleset, the storage grant), and a
dry-run of a candidate. As a non-admin: 403, and none of the dashboard's content.
Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from jovial_guard.policy.store import PolicyStore

from .conftest import EmbeddedHub, SpawnFailed

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
DASH = "/services/jovial-guard-dashboard/"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _browser(user_data: Path):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--no-proxy-server", "--window-size=1280,1600",
                f"--user-data-dir={user_data}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver


@pytest.fixture
def browser() -> Iterator[object]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are missing: run scripts/install-system.sh")
    profile = Path(tempfile.mkdtemp(prefix="jg-chromium-"))
    driver = _browser(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _login(driver: object, hub: EmbeddedHub, username: str, password: str, *, target: str) -> None:
    """Open ``target``; the hub sends us to its login form; fill it in like a person."""
    from selenium.webdriver.common.by import By

    driver.get(hub.url + target)  # type: ignore[attr-defined]
    _wait(driver, lambda d: d.find_elements(By.ID, "username_input"), "the hub login form")
    driver.find_element(By.ID, "username_input").send_keys(username)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "password_input").send_keys(password)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "login_submit").click()  # type: ignore[attr-defined]


def _wait(driver: object, condition, what: str, timeout: float = 30) -> object:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition(driver)
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; at {driver.current_url}:\n"  # type: ignore[attr-defined]
                         f"{driver.page_source[:3000]}")  # type: ignore[attr-defined]


def _text(driver: object) -> str:
    """The visible text; empty while a navigation replaces the document."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)  # type: ignore[attr-defined]
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def _shot(driver: object, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"dashboard-{name}.png"
    height = driver.execute_script("return document.body.scrollHeight")  # type: ignore[attr-defined]
    driver.set_window_size(1280, min(max(int(height) + 160, 800), 8000))  # type: ignore[attr-defined]
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    return path


def _wait_dashboard(hub: EmbeddedHub, timeout: float = 60) -> None:
    """The managed service is up when the proxy routes to it (it redirects to login)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            resp = requests.get(hub.url + DASH, allow_redirects=False, timeout=5)
            if resp.status_code == 302:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise AssertionError("the dashboard service did not come up:\n" + hub.hub_log())


def _admin_password(hub: EmbeddedHub) -> str:
    return hub.stack.settings.admin_password or (hub.state_dir / "admin-password").read_text().strip()


def _user_password(hub: EmbeddedHub) -> str:
    return hub.stack.settings.password or (hub.state_dir / "user-password").read_text().strip()


def test_anonymous_is_sent_to_hub_login(embedded_hub: EmbeddedHub) -> None:
    _wait_dashboard(embedded_hub)
    resp = requests.get(embedded_hub.url + DASH + "servers", allow_redirects=False, timeout=10)
    assert resp.status_code == 302
    assert "/hub/" in resp.headers["Location"]


def test_admin_sees_revision_denial_hardening_and_dry_run(embedded_hub: EmbeddedHub, browser: object,
                                                          tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    hub = embedded_hub
    _wait_dashboard(hub)
    # A denial with a reason: gpu is for gpu-users only.
    with pytest.raises(SpawnFailed) as denied:
        hub.spawn("dashdenied", profile="gpu", groups=())
    assert denied.value.status == 403
    # A running, hardened server (astro: archive egress; a storage grant).
    hub.spawn("dashrunner", profile="default", groups=("astro",))
    revision = (hub.state_dir / "policy-store" / "current").read_text().strip()

    _login(browser, hub, "guardadmin", _admin_password(hub), target=DASH)
    _wait(browser, lambda d: "Current policy revision" in _text(d), "the policy page")
    page = _text(browser)
    assert revision in page
    assert re.search(r"Lint .*passed", page) and re.search(r"Tests \(opa test\)\s*passed", page), page
    assert "Signed in as guardadmin" in page
    _shot(browser, "policy")

    browser.get(hub.url + DASH + "history")  # type: ignore[attr-defined]
    _wait(browser, lambda d: "Policy history" in _text(d), "the history page")
    assert revision in _text(browser) and "deploy" in _text(browser)
    _shot(browser, "history")

    browser.get(hub.url + DASH + "denials")  # type: ignore[attr-defined]
    _wait(browser, lambda d: "Recent denials" in _text(d), "the denials page")
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "table tr")  # type: ignore[attr-defined]
            if r.text.startswith("dashdenied")]
    assert any("gpu" in r and "profile" in r.lower() for r in rows), rows
    _shot(browser, "denials")

    browser.get(hub.url + DASH + "servers")  # type: ignore[attr-defined]
    _wait(browser, lambda d: "Hardening applied to dashrunner" in _text(d), "the servers page")
    page = _text(browser)
    section = page[page.index("Hardening applied to dashrunner"):]
    assert re.search(r"Read-only root filesystem\s+yes", section), section[:2000]
    assert re.search(r"Seccomp\s+.*notebook", section), section[:2000]
    assert "table inet" in section or "table ip" in section, section[:3000]
    assert hub.user_rules("dashrunner").splitlines()[0] in section
    assert re.search(r"Storage grant\s+\S+ at /lustre", section), section[:2000]
    # The audit service's live attestation of the same server (every 5 s and at its start).
    assert re.search(r"Live attestation\s+attested \d+ s ago: ok", section), section[:3000]
    _shot(browser, "servers")

    # Dry-run: a candidate that lets everyone use the gpu profile would allow dashdenied.
    candidate = tmp_path / "candidate"
    shutil.copytree(PolicyStore(hub.state_dir / "policy-store").source_dir(revision), candidate)
    data = json.loads((candidate / "data.json").read_text())
    data["settings"]["profiles"]["gpu"]["groups"] = ["*"]
    (candidate / "data.json").write_text(json.dumps(data, indent=2) + "\n")
    browser.get(hub.url + DASH + "dry-run")  # type: ignore[attr-defined]
    field = _wait(browser, lambda d: d.find_elements(By.ID, "candidate"), "the dry-run form")[0]  # type: ignore[index]
    label = browser.find_element(By.CSS_SELECTOR, "label[for=candidate]")  # type: ignore[attr-defined]
    assert "Candidate policy directory" in label.text
    field.send_keys(str(candidate))
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()  # type: ignore[attr-defined]
    _wait(browser, lambda d: "Dry-run summary" in _text(d), "the dry-run report", timeout=60)
    page = _text(browser)
    newly_allowed = re.search(r"Newly allowed users\s+(.*)", page)
    assert newly_allowed and "dashdenied" in newly_allowed.group(1), page
    assert re.search(r"dashdenied\s+denied -> allowed", page), page
    _shot(browser, "dry-run")

    # A bad path is refused with a message, not run.
    (tmp_path / "empty").mkdir()
    browser.get(hub.url + DASH + "dry-run?candidate=" + quote(str(tmp_path / "empty")))  # type: ignore[attr-defined]
    _wait(browser, lambda d: "holds no .rego files" in _text(d), "the refusal")
    hub.stop("dashrunner")


def test_non_admin_gets_403(embedded_hub: EmbeddedHub, browser: object) -> None:
    hub = embedded_hub
    _wait_dashboard(hub)
    hub.ensure_user("dashviewer", ())
    _login(browser, hub, "dashviewer", _user_password(hub), target=DASH)
    _wait(browser, lambda d: "403" in _text(d), "a 403 page")
    page = _text(browser)
    assert "Current policy revision" not in page and "Hardening applied" not in page
    _shot(browser, "non-admin-403")
    for path in ("servers", "denials", "dry-run?candidate=/"):
        browser.get(hub.url + DASH + path)  # type: ignore[attr-defined]
        _wait(browser, lambda d: "403" in _text(d), f"a 403 page for {path}")
        assert "Recent denials" not in _text(browser)


def _token(hub: EmbeddedHub, username: str) -> str:
    resp = hub.api("POST", f"/users/{username}/tokens", json={"note": "dashboard test", "expires_in": 600})
    resp.raise_for_status()
    return str(resp.json()["token"])


def test_service_itself_refuses_non_admin_tokens_and_serves_admins_fast(embedded_hub: EmbeddedHub) -> None:
    """The service's own gate (not the hub's OAuth page): a non-admin's API token gets the
    dashboard's 403 page; the admin's token gets every page. Page times are printed."""
    hub = embedded_hub
    _wait_dashboard(hub)
    hub.ensure_user("dashtoken", ())
    viewer = _token(hub, "dashtoken")
    resp = requests.get(hub.url + DASH, headers={"Authorization": f"token {viewer}"},
                        allow_redirects=False, timeout=30)
    assert resp.status_code == 403
    assert "hub admins only" in resp.text and "Current policy revision" not in resp.text
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")

    admin = _token(hub, "guardadmin")
    timings = {}
    for path in ("", "history", "denials", "servers", "audit", "dry-run"):
        started = time.perf_counter()
        resp = requests.get(hub.url + DASH + path, headers={"Authorization": f"token {admin}"},
                            allow_redirects=False, timeout=60)
        timings[path or "policy"] = round((time.perf_counter() - started) * 1000, 1)
        assert resp.status_code == 200, (path, resp.status_code, resp.text[:500])
        assert "<main id=\"main\">" in resp.text
    resp = requests.get(hub.url + DASH + "no/such/page", headers={"Authorization": f"token {admin}"}, timeout=30)
    assert resp.status_code == 404 and "No such page in the dashboard" in resp.text
    assert requests.get(hub.url + DASH + "no/such/page", allow_redirects=False, timeout=30).status_code == 302
    print(f"\ndashboard page times (ms, through the proxy): {timings}")


async def test_admin_sees_audit_events_and_responses(embedded_hub: EmbeddedHub, browser: object) -> None:
    """The hub's own audit service (a managed hub service writing STATE/audit): a Falco
    alert from a user's container and the response it triggered appear on the Audit page."""
    import asyncio

    import aiohttp

    from jovial_guard.audit.query import Query, run_query

    hub, user = embedded_hub, "dashaudit"
    _wait_dashboard(hub)
    audit_url = hub.api("GET", "/services/jovial-guard-audit").json()["url"]
    await asyncio.to_thread(hub.spawn, user, "default", ())
    container = await asyncio.to_thread(hub.container, user)
    alert = json.loads((REPO / "tests" / "vectors" / "audit" / "falco" / "read_sensitive_file.json").read_text())
    alert["output_fields"]["container.id"] = container.id[:12]
    alert["output_fields"]["container.name"] = hub.container_name(user)
    async with aiohttp.ClientSession() as session, session.post(f"{audit_url}/falco", json=alert) as resp:
        assert resp.status == 200
    # config/audit-responses.yaml: a credential read -> notify + revoke_storage.
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        done = [r for r in run_query(hub.state_dir / "audit", Query(user=user, kind="response"))
                if r["fields"].get("action") == "notify"]
        if done:
            break
        assert asyncio.get_running_loop().time() < deadline, "no response record from the hub's audit service"
        await asyncio.sleep(0.25)

    def look() -> str:
        _login(browser, hub, "guardadmin", _admin_password(hub), target=DASH + "audit")
        _wait(browser, lambda d: "Responses" in _text(d), "the audit page")
        _shot(browser, "audit")
        return _text(browser)

    page = await asyncio.to_thread(look)
    events = page[page.index("Audit events"):page.index("Responses")]
    responses = page[page.index("Responses"):]
    assert re.search(rf"falco\s+{user}\s+Read sensitive file untrusted", events), events[:2000]
    assert re.search(rf"{user}\s+notify by credential-read on Read sensitive file untrusted .*done", responses), \
        responses[:2000]
    await asyncio.to_thread(hub.stop, user)
