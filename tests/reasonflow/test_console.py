"""The console page at `/` in a real browser (Debian's chromium driven by Playwright) against a
live server: log in, connected, sync with toasts and badges, process and approve a draft, batch
progress, a server restart with no missing event, and a tidy phone-width layout."""

import re
import urllib.request
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.support.browser import launch_chromium, record_failed_responses
from tests.support.demo_server import DEMO_EMAIL, DEMO_PASSWORD, DemoServer, api
from tests.support.proxy import UpgradeBlockingProxy

pytestmark = pytest.mark.live

TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server():
    with DemoServer() as live:
        yield live


@pytest.fixture(autouse=True)
def server_running_after(server):
    """A test that stopped the server and failed before starting it again leaves it running,
    so one failure does not become every later test's connection refused."""
    yield
    if not server.running:
        server.start_again()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("console-screenshots")


def log_in(page, server: DemoServer, email: str = DEMO_EMAIL, password: str = DEMO_PASSWORD):
    page.goto(server.http_url + "/")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#state")).to_have_attribute("data-state", "connected")
    # The badges start from the REST counts.
    expect(page.locator("#badge-unread")).to_have_attribute("data-count", re.compile(r"^\d+$"))
    expect(page.locator("#badge-drafts")).to_have_attribute("data-count", re.compile(r"^\d+$"))
    # The feed starts from the stored history (loaded once the socket said where it stands).
    expect(page.locator("#feed")).to_have_attribute("data-history", "loaded")


def badge(page, name: str) -> int:
    return int(page.locator(f"#badge-{name}").get_attribute("data-count"))


def new_demo_user(server: DemoServer) -> tuple[str, str]:
    """A fresh user for tests that must not see another test's events or emails."""
    email = f"console-{uuid.uuid4().hex[:10]}@example.com"
    password = "console-password-4417"
    server.register(email, password)
    return email, password


def rest_count(server: DemoServer, token: str, path: str) -> int:
    status, body = api(server.http_url, "GET", path, token=token)
    assert status == 200, body
    return body["count"]


def sync_and_wait_for_its_events(page) -> list[int]:
    """Sync, then wait until the feed shows every email it stored (the REST answer can come
    before the events): the feed's event ids."""
    page.click("[data-action=sync]")
    expect(page.locator("#action-status")).to_contain_text("Sync stored")
    stored = int(re.search(r"stored (\d+)", page.inner_text("#action-status")).group(1))
    assert stored > 0
    expect(page.locator("#feed li[data-type=email_received]")).to_have_count(stored)
    return feed_ids(page)


def feed_ids(page) -> list[int]:
    ids = page.locator("#feed li[data-event-id]").evaluate_all(
        "rows => rows.map(row => Number(row.dataset.eventId))"
    )
    return sorted(ids)


# --- serving ---------------------------------------------------------------------------------


def test_the_console_and_its_static_files_are_served(server):
    with urllib.request.urlopen(server.http_url + "/", timeout=10) as response:  # noqa: S310
        html = response.read().decode()
    assert "/static/notifications/console.js" in html
    for name in ("client.js", "console.js", "console.css"):
        url = f"{server.http_url}/static/notifications/{name}"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
            assert response.status == 200
            kind = "css" if name.endswith(".css") else "javascript"
            assert kind in response.headers["Content-Type"]


# --- in the browser ----------------------------------------------------------------------------


def test_a_wrong_password_shows_an_error_and_no_connection(page, server):
    page.goto(server.http_url + "/")
    page.fill("#email", DEMO_EMAIL)
    page.fill("#password", "not-the-password")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("Wrong email or password.")
    expect(page.locator("#app")).to_be_hidden()
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")


def test_unusable_tokens_end_in_auth_failed_and_the_login_form(page, server):
    page.goto(server.http_url + "/")
    # A stored session whose access and refresh tokens are both unusable: the socket closes
    # 4002, the client asks getToken() once (the refresh fails), and stops.
    page.evaluate(
        """sessionStorage.setItem('reasonflow.console.tokens', JSON.stringify(
            {access: 'a.b.c', refresh: 'not-a-refresh-token', email: 'gone@example.com'}))"""
    )
    page.reload()
    expect(page.locator("#state")).to_have_attribute("data-state", "auth_failed")
    expect(page.locator("#state")).to_have_text("auth failed")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-error")).to_contain_text("log in again")


def test_log_in_connect_and_a_test_event_reaches_feed_toast_and_badge(page, server):
    page.goto(server.http_url + "/")
    page.click("#use-demo")
    expect(page.locator("#state")).to_have_attribute("data-state", "connected")
    expect(page.locator("#badge-unread")).to_have_attribute("data-count", re.compile(r"^\d+$"))
    unread = badge(page, "unread")
    page.select_option("#test-type", "email_received")
    page.click("[data-action=test]")
    row = page.locator("#feed li[data-type=email_received]").first
    expect(row).to_contain_text("Test notification: meeting tomorrow")
    expect(page.locator(".toast").first).to_contain_text("New email")
    expect(page.locator("#badge-unread")).to_have_attribute("data-count", str(unread + 1))


def test_sync_shows_toasts_and_the_unread_badge_follows_then_survives_a_reload(page, server):
    email, password = new_demo_user(server)
    log_in(page, server, email, password)
    assert badge(page, "unread") == 0
    page.click("[data-action=sync]")
    expect(page.locator("#action-status")).to_contain_text("Sync stored")
    received = int(re.search(r"stored (\d+)", page.inner_text("#action-status")).group(1))
    assert received > 0
    expect(page.locator("#badge-unread")).to_have_attribute("data-count", str(received))
    expect(page.locator("#feed li[data-type=email_received]")).to_have_count(received)
    expect(page.locator(".toast").filter(has_text="New email").first).to_be_visible()

    token = page.evaluate("JSON.parse(sessionStorage.getItem('reasonflow.console.tokens')).access")
    assert rest_count(server, token, "emails/?unread=true") == received
    page.reload()
    expect(page.locator("#state")).to_have_attribute("data-state", "connected")
    # After a reload the badge is the REST count again, not the count plus the replayed events.
    expect(page.locator("#badge-unread")).to_have_attribute("data-count", str(received))


def test_process_then_approve_a_draft_moves_the_drafts_badge_and_sends(page, server):
    email, password = new_demo_user(server)
    log_in(page, server, email, password)
    page.click("[data-action=sync]")
    expect(page.locator("#action-status")).to_contain_text("Sync stored")
    drafts_before = badge(page, "drafts")
    # Spam is closed without a draft: process until a draft is ready.
    for _ in range(6):
        page.click("[data-action=process]")
        expect(page.locator("#action-status")).to_contain_text("Processed")
        if page.locator("#feed li[data-type=draft_ready]").count():
            break
    expect(page.locator("#feed li[data-type=draft_ready]")).to_have_count(1)
    expect(page.locator(".toast").filter(has_text="Draft ready").first).to_be_visible()
    expect(page.locator("#badge-drafts")).to_have_attribute("data-count", str(drafts_before + 1))

    page.click("[data-action=approve]")
    expect(page.locator("#action-status")).to_contain_text("Approved")
    expect(page.locator("#feed li[data-type=draft_approved]")).to_have_count(1)
    expect(page.locator("#feed li[data-type=email_sent]")).to_have_count(1)
    expect(page.locator(".toast").filter(has_text="Email sent").first).to_be_visible()
    expect(page.locator("#badge-drafts")).to_have_attribute("data-count", str(drafts_before))


def test_reject_a_draft_moves_the_drafts_badge_down(page, server):
    email, password = new_demo_user(server)
    log_in(page, server, email, password)
    page.click("[data-action=sync]")
    expect(page.locator("#action-status")).to_contain_text("Sync stored")
    for _ in range(6):
        page.click("[data-action=process]")
        expect(page.locator("#action-status")).to_contain_text("Processed")
        if page.locator("#feed li[data-type=draft_ready]").count():
            break
    expect(page.locator("#badge-drafts")).to_have_attribute("data-count", "1")
    page.click("[data-action=reject]")
    expect(page.locator("#feed li[data-type=draft_rejected]")).to_have_count(1)
    expect(page.locator("#badge-drafts")).to_have_attribute("data-count", "0")


def sync_then_start_a_batch(page) -> None:
    page.click("[data-action=sync]")
    expect(page.locator("#action-status")).to_contain_text("Sync stored")
    page.click("[data-action=batch]")


def test_a_batch_job_shows_a_progress_bar_that_ends_on_batch_complete(page, server):
    email, password = new_demo_user(server)
    log_in(page, server, email, password)
    sync_then_start_a_batch(page)
    job = page.locator("#jobs li[data-job-id]").first
    expect(job).to_have_attribute("data-final", "completed")
    expect(job.locator(".progress")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#feed li[data-type=batch_complete]")).to_have_count(1)
    assert page.locator("#feed li[data-type=batch_progress]").count() >= 1


def test_a_server_restart_reconnects_and_resumes_with_no_missing_event(page, server, screenshots):
    email, password = new_demo_user(server)
    log_in(page, server, email, password)
    before = sync_and_wait_for_its_events(page)
    assert before == list(range(1, len(before) + 1))

    server.stop()  # every socket closes: the page must notice and back off
    expect(page.locator("#state")).to_have_attribute(
        "data-state", re.compile("reconnecting|connecting")
    )
    expect(page.locator("#state")).to_contain_text("reconnecting in")
    page.screenshot(path=str(screenshots / "console-reconnecting.png"))
    missed = server.publish_direct(email=email, event_type="email_received", count=3)
    assert missed == [len(before) + 1, len(before) + 2, len(before) + 3]
    server.start_again()
    expect(page.locator("#state")).to_have_attribute("data-state", "connected", timeout=45_000)
    expect(page.locator("#feed li[data-event-id]")).to_have_count(len(before) + 3)
    assert feed_ids(page) == list(range(1, len(before) + 4))
    # Resumed (recovered): the replayed events moved the badge, nothing was recounted twice.
    expect(page.locator("#badge-unread")).to_have_attribute("data-count", str(len(before) + 3))


def test_phone_width_layout_has_no_horizontal_scroll(browser, server, screenshots):
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(server.http_url + "/")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(screenshots / "console-phone-login.png"))
        page.click("#use-demo")
        expect(page.locator("#state")).to_have_attribute("data-state", "connected")
        page.select_option("#test-type", "email_received")
        page.click("[data-action=test]")
        expect(page.locator("#feed li[data-type=email_received]").first).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(screenshots / "console-phone.png"), full_page=True)
    finally:
        context.close()


# --- history after a login or a reload -------------------------------------------------------


def feed_ids_in_order(page) -> list[int]:
    """The feed's event ids top to bottom, as a person reads them."""
    return page.locator("#feed li[data-event-id]").evaluate_all(
        "rows => rows.map(row => Number(row.dataset.eventId))"
    )


def test_a_reload_shows_the_stored_history_with_its_jobs_and_no_toast(page, server):
    email, password = new_demo_user(server)
    log_in(page, server, email, password)
    sync_then_start_a_batch(page)
    expect(page.locator("#jobs li[data-job-id]").first).to_have_attribute("data-final", "completed")
    expect(page.locator("#feed li[data-type=batch_complete]")).to_have_count(1)
    shown = feed_ids_in_order(page)
    unread, drafts = badge(page, "unread"), badge(page, "drafts")

    page.reload()
    expect(page.locator("#state")).to_have_attribute("data-state", "connected")
    expect(page.locator("#feed li[data-event-id]")).to_have_count(len(shown))
    assert feed_ids_in_order(page) == shown == sorted(shown, reverse=True)
    expect(page.locator("#feed-count")).to_have_text(f"({len(shown)})")
    job = page.locator("#jobs li[data-job-id]")
    expect(job).to_have_count(1)
    expect(job).to_have_attribute("data-final", "completed")
    expect(job.locator(".progress")).to_have_attribute("aria-valuenow", "100")
    # History is shown, not announced: no toast, and the badges are the REST counts.
    expect(page.locator(".toast")).to_have_count(0)
    # The counts load after the socket connects: wait for them, then compare.
    expect(page.locator("#badge-unread")).to_have_attribute("data-count", str(unread))
    expect(page.locator("#badge-drafts")).to_have_attribute("data-count", str(drafts))


def test_a_login_shows_the_newest_fifty_stored_events_newest_first(page, server):
    email, password = new_demo_user(server)
    assert server.publish_direct(email=email, event_type="email_received", count=60)[-1] == 60
    log_in(page, server, email, password)
    expect(page.locator("#feed li[data-event-id]")).to_have_count(50)
    assert feed_ids_in_order(page) == list(range(60, 10, -1))
    expect(page.locator(".toast")).to_have_count(0)
    assert badge(page, "unread") == 0  # sample events store no email: the REST count stands


def test_events_replayed_and_live_during_the_history_load_show_once_in_order(page, server):
    email, password = new_demo_user(server)
    server.publish_direct(email=email, event_type="email_received", count=3)
    log_in(page, server, email, password)
    expect(page.locator("#feed li[data-event-id]")).to_have_count(3)

    # Away from the page (its tab keeps the resume point), two more events are stored; back on
    # it, the history request is held while the socket replays those two and a live one comes.
    page.goto("about:blank")
    assert server.publish_direct(email=email, event_type="email_received", count=2) == [4, 5]
    held = []
    page.route("**/api/v1/notifications/events*", lambda route: held.append(route))
    page.goto(server.http_url + "/")
    expect(page.locator("#state")).to_have_attribute("data-state", "connected")
    expect(page.locator("#feed li[data-event-id]")).to_have_count(2)
    assert feed_ids_in_order(page) == [5, 4]
    staff = server.login()["access"]
    live = server.send_test_event(staff_token=staff, user=email, event_type="email_received")
    assert live["id"] == 6
    expect(page.locator("#feed li[data-event-id='6']")).to_have_count(1)
    assert len(held) == 1
    held[0].continue_()  # the history now answers 1..6: three of them are on the page already

    expect(page.locator("#feed li[data-event-id]")).to_have_count(6)
    assert feed_ids_in_order(page) == [6, 5, 4, 3, 2, 1]
    # Only the live event is news: one toast, one more unread (the REST count was 0).
    expect(page.locator(".toast")).to_have_count(1)
    expect(page.locator("#badge-unread")).to_have_attribute("data-count", "1")


# --- toasts and the feed ---------------------------------------------------------------------

OVERLAPS = """() => {
  const boxes = (selector) => [...document.querySelectorAll(selector)].map((el) => {
    const r = el.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, label: el.textContent};
  });
  const visible = (r) => r.bottom > 0 && r.top < innerHeight && r.right > 0 && r.left < innerWidth;
  const rows = boxes("#feed li").filter(visible);
  const toasts = boxes(".toast").filter(visible);
  const overlaps = [];
  for (const t of toasts) for (const r of rows) {
    if (t.left < r.right && r.left < t.right && t.top < r.bottom && r.top < t.bottom) {
      overlaps.push(`${t.label} over ${r.label}`);
    }
  }
  return {rows: rows.length, toasts: toasts.length, overlaps};
}"""


@pytest.mark.parametrize(
    "viewport",
    [{"width": 1280, "height": 800}, {"width": 390, "height": 844}],
    ids=["desktop", "phone"],
)
def test_toasts_never_cover_the_feed(browser, server, viewport):
    context = browser.new_context(viewport=viewport, is_mobile=viewport["width"] < 900)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        email, password = new_demo_user(server)
        # A feed longer than the screen, so rows reach every part of it.
        server.publish_direct(email=email, event_type="email_classified", count=40)
        log_in(page, server, email, password)
        expect(page.locator("#feed li[data-event-id]")).to_have_count(40)
        page.click("[data-action=sync]")  # three new emails: three toasts at once
        expect(page.locator(".toast")).to_have_count(3)
        height = page.evaluate("document.documentElement.scrollHeight")
        seen = {"rows": 0, "toasts": 0}
        for top in range(0, height, viewport["height"] // 3):
            page.evaluate(f"window.scrollTo(0, {top})")
            found = page.evaluate(OVERLAPS)
            assert found["overlaps"] == [], f"at scroll {top}: {found['overlaps']}"
            seen["rows"] = max(seen["rows"], found["rows"])
            seen["toasts"] = max(seen["toasts"], found["toasts"])
        # The check saw both on screen (else it proves nothing).
        assert seen["rows"] > 5
        assert seen["toasts"] >= 1
    finally:
        context.close()


# --- no missing file -------------------------------------------------------------------------


def test_the_favicon_is_served_and_no_request_fails(page, server):
    failures: list[str] = []
    record_failed_responses(page, failures)
    page.on("requestfailed", lambda request: failures.append(f"failed {request.url}"))
    page.on(
        "console",
        lambda message: message.type == "error" and failures.append(f"console: {message.text}"),
    )
    email, password = new_demo_user(server)
    log_in(page, server, email, password)
    page.reload()
    # Leave only once the page's own requests are answered (a navigation aborts the rest).
    expect(page.locator("#state")).to_have_attribute("data-state", "connected")
    expect(page.locator("#feed")).to_have_attribute("data-history", "loaded")
    expect(page.locator("#badge-unread")).to_have_attribute("data-count", "0")
    expect(page.locator("#badge-drafts")).to_have_attribute("data-count", "0")
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert page.request.get(server.http_url + icon).headers["content-type"] == "image/svg+xml"
    page.goto(server.http_url + "/admin/login/")
    expect(page.locator("#id_username")).to_be_visible()
    assert failures == []
    # What browsers fetch for a page with no icon link, such as the admin's.
    favicon = page.request.get(server.http_url + "/favicon.ico")
    assert favicon.status == 200
    assert favicon.headers["content-type"] in {"image/x-icon", "image/vnd.microsoft.icon"}
    assert favicon.body()[:4] == b"\x00\x00\x01\x00"  # an ICO file


# --- WebSocket blocked: the event stream (PROTOCOL §5) -----------------------------------------

# What a page sees where an extension or policy forbids WebSockets.
NO_WEBSOCKET = "window.WebSocket = function () { throw new Error('WebSocket is blocked'); };"


def assert_live_over_sse_across_a_restart(page, server: DemoServer, email: str) -> None:
    state = page.locator("#state")
    expect(state).to_have_attribute("data-transport", "sse")
    expect(state).to_contain_text("SSE")
    before = sync_and_wait_for_its_events(page)
    assert before == list(range(1, len(before) + 1))

    server.stop()
    expect(state).to_have_attribute("data-state", re.compile("reconnecting|connecting"))
    missed = server.publish_direct(email=email, event_type="email_received", count=3)
    server.start_again()
    expect(state).to_have_attribute("data-state", "connected", timeout=45_000)
    expect(state).to_have_attribute("data-transport", "sse")
    expect(page.locator("#feed li[data-event-id]")).to_have_count(len(before) + 3)
    assert feed_ids(page) == list(range(1, len(before) + 4))
    assert missed == feed_ids(page)[-3:]
    # And live again after the restart.
    page.click("[data-action=sync]")
    expect(page.locator("#feed li[data-event-id]")).to_have_count(
        len(before) + 3 + len(before), timeout=30_000
    )


def test_with_websocket_forbidden_the_console_streams_over_sse_across_a_restart(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(NO_WEBSOCKET)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    email, password = new_demo_user(server)
    try:
        log_in(page, server, email, password)
        assert_live_over_sse_across_a_restart(page, server, email)
    finally:
        context.close()
    assert errors == []


def test_behind_a_proxy_that_drops_upgrades_the_console_falls_back_to_sse(page, server):
    email, password = new_demo_user(server)
    with UpgradeBlockingProxy(server.port, mode="drop") as proxy:
        page.goto(proxy.http_url + "/")
        page.fill("#email", email)
        page.fill("#password", password)
        page.click("#login-form button[type=submit]")
        expect(page.locator("#state")).to_have_attribute("data-state", "connected")
        assert proxy.blocked >= 2  # two upgrades failed without a close frame, then SSE
        assert_live_over_sse_across_a_restart(page, server, email)
