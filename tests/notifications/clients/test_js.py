"""The JavaScript client's own test suite (tests/js/, Node's built-in runner against a live
server), run from pytest so that `make test` and CI run it too."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.support.live import ROOT

pytestmark = pytest.mark.live

# Node 20 ships WebSocket behind a flag; newer versions have it on by default.
NODE_FLAGS = ["--experimental-websocket"]


def node_major(node: str) -> int:
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    return int(version.stdout.strip().lstrip("v").split(".")[0])


def test_js_client_suite_passes_against_a_live_server():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JavaScript client tests need Node 20 or newer")
    if node_major(node) < 20:
        pytest.skip(f"node {node_major(node)} found: the JavaScript client tests need 20 or newer")
    flags = NODE_FLAGS if node_major(node) < 22 else []
    result = subprocess.run(
        [node, *flags, "--test", "--test-reporter=tap", "tests/js/"],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    counts = {key: int(value) for key, value in re.findall(r"^# (pass|fail) (\d+)$", output, re.M)}
    assert result.returncode == 0, output[-6000:]
    assert counts.get("fail") == 0, output[-6000:]
    assert counts.get("pass", 0) >= 15, output[-6000:]
