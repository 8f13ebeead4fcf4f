"""The admin as `make run` serves it (DEBUG on, `serve` with its demo superuser), in Debian's
chromium: the demo user reaches every admin page docs/operating.md shows, sends a test notification
from the user list, and the event arrives on a real WebSocket of the chosen user."""

import json
import re
import uuid

import pytest
from playwright.sync_api import expect, sync_playwright
from websockets.sync.client import connect

from tests.support.browser import launch_chromium, record_failed_responses
from tests.support.demo_server import DEMO_EMAIL, DEMO_PASSWORD, api
from tests.support.live import LiveServer

pytestmark = pytest.mark.live

TIMEOUT_MS = 20_000
# Users (with the action), Notifications -> Events, the Emails section, Mail accounts.
ADMIN_PAGES = (
    "users/user/",
    "notifications/event/",
    "emails/email/",
    "emails/draft/",
    "emails/batchjob/",
    "emails/mailaccount/",
)


@pytest.fixture(scope="module")
def server():
    # What `make run` starts: DEBUG on and the demo user ensured by `serve` itself.
    with LiveServer(env={"DEBUG": "true"}, demo=True) as live:
        yield live


@pytest.fixture
def page():
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        failures: list[str] = []
        record_failed_responses(page, failures)
        page.on("pageerror", lambda error: failures.append(f"error: {error}"))
        yield page
        browser.close()
        assert failures == [], f"failed requests or script errors: {failures}"


def admin_log_in(page, server: LiveServer) -> None:
    page.goto(server.http_url + "/admin/")
    page.fill("#id_username", DEMO_EMAIL)
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text("demo@reasonflow.local")


def registered_user(server: LiveServer) -> tuple[str, str]:
    """A fresh user (REST register) and an access token from the REST login."""
    email, password = f"admin-{uuid.uuid4().hex[:10]}@example.com", "admin-test-password-5531"
    status, body = api(
        server.http_url, "POST", "auth/register", body={"email": email, "password": password}
    )
    assert status == 201, body
    status, body = api(
        server.http_url, "POST", "auth/login", body={"email": email, "password": password}
    )
    assert status == 200, body
    return email, body["access"]


def test_the_demo_user_reaches_every_admin_page_of_the_readme(page, server):
    email, _ = registered_user(server)
    admin_log_in(page, server)
    expect(page.locator("#content")).not_to_contain_text("permission")
    for path in ADMIN_PAGES:
        # The index lists it (the demo user may see it), and it opens.
        expect(page.locator(f"#content-main th a[href='/admin/{path}']")).to_be_visible()
    for path in ADMIN_PAGES:
        response = page.goto(f"{server.http_url}/admin/{path}")
        assert response.status == 200, path
        expect(page.locator("#changelist")).to_be_visible()
    # A user's page: its online connections and the link to their stored events.
    page.goto(server.http_url + "/admin/users/user/")
    page.get_by_role("link", name=email).click()
    expect(page.locator(".field-online_connections")).to_be_visible()
    page.get_by_role("link", name="Stored events of this user").click()
    expect(page.locator("#changelist")).to_be_visible()


def test_send_test_notification_from_the_admin_reaches_the_users_socket(page, server):
    email, access = registered_user(server)
    with connect(server.ws_url, open_timeout=20) as ws:
        ws.send(json.dumps({"token": access}))
        connected = json.loads(ws.recv(timeout=20))
        assert connected["type"] == "connected", connected

        admin_log_in(page, server)
        page.click("#content-main th a[href='/admin/users/user/']")
        page.get_by_role("row", name=email).locator("input.action-select").check()
        page.select_option("select[name=action]", "send_test_notification")
        page.click("button[name=index]")
        expect(page.locator("h1")).to_have_text("Send test notification")
        expect(page.locator("#content-main")).to_contain_text(email)
        page.select_option("#id_event_type", "draft_ready")
        # Switching the type swapped in a valid draft_ready sample: send it as it is.
        expect(page.locator("#id_data")).to_have_value(re.compile("requires_approval"))
        page.click("input[type=submit][value='Send test notification']")
        event_id = connected["last_event_id"] + 1
        expect(page.locator(".messagelist .success")).to_contain_text(
            f"Sent draft_ready event #{event_id} to {email}; connections online: "
        )

        envelope = json.loads(ws.recv(timeout=20))
    assert envelope["type"] == "draft_ready"
    assert envelope["id"] == event_id
    assert envelope["user_id"] == connected["user_id"]
    assert set(envelope["data"]) == {"draft_id", "email_id", "requires_approval"}
