"""bench.infra.checkout: an earlier revision in a worktree of its own, gone afterwards."""

import subprocess

import pytest

from bench.infra import ROOT, checkout


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
