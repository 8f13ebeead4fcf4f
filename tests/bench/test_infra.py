"""bench.infra: checkout (an earlier revision in a worktree of its own, gone afterwards) and
postgres_cpu (what PostgreSQL spent, exited backends included)."""

import subprocess
import time

import psycopg
import pytest

from bench.infra import ROOT, checkout, postgres_cpu


def git(*args: str, cwd=ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=True
    ).stdout


def worktrees() -> str:
    return git("worktree", "list", "--porcelain")


def test_checkout_holds_the_revision_and_is_removed_afterwards():
    head = git("rev-parse", "HEAD~1").strip()
    with checkout("HEAD~1") as path:
        assert (path / "manage.py").is_file()
        assert git("rev-parse", "HEAD", cwd=path).strip() == head
        assert f"worktree {path}\n" in worktrees()
    assert not path.exists()
    assert str(path) not in worktrees()


def test_checkout_is_removed_when_the_run_fails():
    with pytest.raises(KeyboardInterrupt), checkout("HEAD") as path:
        raise KeyboardInterrupt  # what Ctrl-C raises in the middle of a run
    assert not path.exists()
    assert str(path) not in worktrees()


def test_an_unknown_revision_is_an_error_that_leaves_no_worktree():
    before = worktrees()
    with pytest.raises(RuntimeError, match="no-such-revision"), checkout("no-such-revision"):
        pass
    assert worktrees() == before


def test_postgres_cpu_counts_a_backend_that_has_exited():
    before = postgres_cpu()
    if before is None:
        pytest.skip("no PostgreSQL process on this machine")
    # One connection that burns CPU in its backend, then goes away: its time must still count.
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(url, connect_timeout=5) as conn:
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)")
    deadline = time.monotonic() + 5  # the postmaster reaps the exited backend soon after
    while (used := postgres_cpu() - before) < 0.05 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert used >= 0.05, used
