"""Regenerate the console's favicon.ico from its favicon.svg (16, 32 and 48 px, drawn by
headless chromium and packed as PNG images in one ICO file, which every browser reads).

    .venv/bin/python docs/favicon.py     (needs playwright and /usr/bin/chromium)
"""

import struct
import sys
import urllib.parse
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.browser import launch_chromium  # noqa: E402

STATIC = ROOT / "reasonflow" / "console" / "static" / "notifications"
SIZES = (16, 32, 48)


def ico(images: list[tuple[int, bytes]]) -> bytes:
    """An ICO file holding PNG images (size, png bytes): the format Windows Vista introduced."""
    header = struct.pack("<HHH", 0, 1, len(images))
    offset = len(header) + 16 * len(images)
    entries, blobs = b"", b""
    for size, png in images:
        # width, height (0 means 256), colours, reserved, planes, bits per pixel, size, offset
        entries += struct.pack("<BBBBHHII", size % 256, size % 256, 0, 0, 1, 32, len(png), offset)
        blobs += png
        offset += len(png)
    return header + entries + blobs


def main() -> None:
    svg = (STATIC / "favicon.svg").read_text()
    images = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        for size in SIZES:
            page = browser.new_page(viewport={"width": size, "height": size})
            page.set_content(
                f'<body style="margin:0"><img src="data:image/svg+xml,{urllib.parse.quote(svg)}"'
                f' width="{size}" height="{size}" style="display:block"></body>'
            )
            page.wait_for_load_state()
            images.append((size, page.screenshot(omit_background=True)))
            page.close()
        browser.close()
    (STATIC / "favicon.ico").write_bytes(ico(images))
    print(f"wrote {(STATIC / 'favicon.ico').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
