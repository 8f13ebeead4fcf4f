"""A program a test needs is not installed: skip the test, saying why, under pytest; stop with
the same reason anywhere else (the screenshot scripts, the benchmark)."""

import sys


def program_missing(reason: str):
    if "pytest" in sys.modules:
        import pytest

        pytest.skip(reason)
    raise RuntimeError(reason)
