"""Debian's chromium under Playwright, the only way the console is driven (no browser download)."""

import sys
from pathlib import Path

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
        if "pytest" in sys.modules:
            import pytest

            pytest.skip(NO_CHROMIUM)
        raise RuntimeError(NO_CHROMIUM)
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
