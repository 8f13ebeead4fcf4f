"""The documentation: the site in docs/ builds in MkDocs' strict mode (a broken link, a missing
anchor or a page left out of the navigation fails), and the README stays a short front door
whose relative links all land."""

import os
import re
import subprocess
import sys
from pathlib import Path

from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 260

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines of a Markdown file outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def anchors(markdown_file: Path) -> set[str]:
    """The heading anchors a page has, as MkDocs (and, for these headings, GitHub) makes them."""
    found = set()
    for line in prose_lines(markdown_file.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        if heading:
            title = re.sub(r"`([^`]*)`", r"\1", heading.group(1))
            found.add(slugify(title, "-"))
    return found


def relative_links(markdown_file: Path) -> list[str]:
    targets = []
    for line in prose_lines(markdown_file.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)  # a link inside inline code is not a link
        for match in LINK.finditer(line):
            target = match.group(1) or match.group(2)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto:, ...
                targets.append(target)
    return targets


def broken_links(markdown_file: Path) -> list[str]:
    broken = []
    for target in relative_links(markdown_file):
        path, _, anchor = target.partition("#")
        destination = (markdown_file.parent / path).resolve() if path else markdown_file
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: {destination.name} has no heading #{anchor}")
    return broken


def test_the_site_builds_in_strict_mode_without_a_warning(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    pages = {path.parent.name for path in tmp_path.glob("*/index.html")}
    assert {"protocol", "operating", "production", "performance", "settings"} <= pages, pages
    assert (tmp_path / "console.png").exists()  # pictures go with the pages that show them
    assert not list(tmp_path.rglob("*.py"))  # the screenshot scripts are not published


def test_the_readme_is_a_short_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail to docs/"
    )


def test_every_relative_link_of_the_readme_resolves_with_its_anchor():
    targets = relative_links(README)
    assert any(target.startswith("docs/") for target in targets)  # the map of the docs
    assert broken_links(README) == []


def test_every_docs_page_is_linked_from_the_readme():
    linked = {
        (README.parent / target.partition("#")[0]).resolve() for target in relative_links(README)
    }
    pages = {page.resolve() for page in (ROOT / "docs").glob("*.md")}
    assert sorted(page.name for page in pages - linked) == []


def test_the_link_check_sees_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Close codes\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\n[ok](docs/page.md#close-codes) [bad anchor](docs/page.md#events) "
        "[no file](docs/gone.md) [web](https://example.com) `[code](docs/nope.md)`\n"
        "```\n[fenced](docs/nope.md)\n```\n[self](#title)\n"
    )
    assert broken_links(readme) == [
        "docs/page.md#events: page.md has no heading #events",
        "docs/gone.md: no such file",
    ]
