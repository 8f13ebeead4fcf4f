"""Debian's chromium under Playwright, the only way the console is driven (no browser download)."""

from pathlib import Path

from tests.support.missing import program_missing

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


NO_CHROMIUM = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"


def launch_chromium(playwright):
    """A headless chromium from /usr/bin. Without it a test is skipped, saying why; the
    screenshot scripts in docs/ (outside pytest) stop with the same reason."""
    if not Path(CHROMIUM).exists():
        program_missing(NO_CHROMIUM)
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def record_failed_responses(page, failures: list[str]) -> None:
    """Append "<status> <url>" to `failures` for every response of 400 or more the page gets."""
    page.on(
        "response",
        lambda response: (
            response.status >= 400 and failures.append(f"{response.status} {response.url}")
        ),
    )
