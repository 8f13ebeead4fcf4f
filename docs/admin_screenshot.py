"""Regenerate docs/admin-test-notification.png: the admin's "Send test notification…" form.

    .venv/bin/python docs/admin_screenshot.py     (needs playwright and /usr/bin/chromium)

Serves a scratch database with `runserver` (it serves the admin's static files in DEBUG;
`serve` does not), creates an admin and a user, and opens the form in headless Chromium.
"""

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.redis import free_port  # noqa: E402

ADMIN, PASSWORD = "operator@reasonflow.local", "screenshot-password-7781"


def main() -> None:
    database = Path(tempfile.mkdtemp(prefix="reasonflow-shot-")) / "db.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "DEBUG": "true"}
    env["DJANGO_SETTINGS_MODULE"] = "reasonflow.settings"
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)  # noqa: S603
    port = free_port()
    server = subprocess.Popen(  # noqa: S603
        [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"], cwd=ROOT, env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)  # noqa: S310
                break
            except OSError:
                time.sleep(0.1)
        setup = (
            "import django; django.setup()\n"
            "from reasonflow.users.models import User\n"
            f"User.objects.create_superuser(email={ADMIN!r}, password={PASSWORD!r})\n"
            "User.objects.create_user(email='ada@example.com', password=None)\n"
        )
        subprocess.run([sys.executable, "-c", setup], cwd=ROOT, env=env, check=True)  # noqa: S603
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.goto(f"{base}/admin/login/?next=/admin/users/user/")
            page.fill("#id_username", ADMIN)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.get_by_role("row", name="ada@example.com").locator("input.action-select").check()
            page.select_option("select[name=action]", "send_test_notification")
            page.click("button[name=index]")
            page.select_option("#id_event_type", "draft_ready")
            page.screenshot(path=str(ROOT / "docs" / "admin-test-notification.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
