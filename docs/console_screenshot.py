"""Regenerate docs/console.png: the notification console at 1280x800 after a short demo run
(sync, process until a draft is ready, approve it, start a batch job, send a test event).

    .venv/bin/python docs/console_screenshot.py     (needs playwright and /usr/bin/chromium)

Serves a scratch database the way the tests do (tests/support/demo_server.py) and drives the
page in headless chromium, clicking its buttons as a person would.
"""

import sys
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.browser import launch_chromium  # noqa: E402
from tests.support.demo_server import DemoServer  # noqa: E402

OUTPUT = ROOT / "docs" / "console.png"


def click_and_wait(page, action: str, expected: str) -> None:
    page.click(f"[data-action={action}]")
    expect(page.locator("#action-status")).to_contain_text(expected)


def main() -> None:
    with DemoServer() as server, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(20_000)
        page.goto(server.http_url + "/")
        page.click("#use-demo")
        expect(page.locator("#state")).to_have_attribute("data-state", "connected")
        click_and_wait(page, "sync", "Sync stored")
        click_and_wait(page, "sync", "Sync stored")
        for _ in range(6):
            click_and_wait(page, "process", "Processed")
            if page.locator("#feed li[data-type=draft_ready]").count() >= 2:
                break
        click_and_wait(page, "approve", "Approved")
        click_and_wait(page, "batch", "Batch job")
        expect(page.locator("#jobs li[data-final]").first).to_be_visible()
        page.select_option("#test-type", "email_received")
        click_and_wait(page, "test", "Sent test event")
        page.wait_for_timeout(300)  # let the last toast finish sliding in
        page.screenshot(path=str(OUTPUT))
        browser.close()
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
