"""The pipeline's git operations on real repositories: one-line errors naming git's own complaint."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from miyabi.pipeline.git import GitError, Repository


def repo(tmp: Path, commit: bool = True) -> Path:
    r = tmp / "r"
    subprocess.run(["git", "init", "-q", "-b", "main", str(r)], check=True)
    if commit:
        (r / "a.txt").write_text("a\n")
        subprocess.run(["git", "add", "a.txt"], cwd=r, check=True)
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "a"], cwd=r, check=True)
    return r


def test_git_errors_are_one_line_with_gits_own_words(tmp_path: Path) -> None:
    r = Repository(repo(tmp_path))
    with pytest.raises(GitError) as e:
        r.push("nowhere", r.sha("HEAD"), "x")
    assert "pushing x to nowhere: 'nowhere' does not appear to be a git repository" in str(e.value) and "\n" not in str(
        e.value
    )
    with pytest.raises(GitError, match="not a git repository"):
        Repository(tmp_path)
    with pytest.raises(GitError, match=r"reading its branch \(does it have a commit\?\)"):
        Repository(repo(tmp_path / "empty", commit=False)).current_branch()


def test_worktrees_commit_and_a_compare_and_swap_advance(tmp_path: Path) -> None:
    r = Repository(repo(tmp_path))
    wt = tmp_path / "wt"
    assert r.add_worktree(wt, "miyabi/1-x", "main") is True
    assert r.worktree_of("miyabi/1-x") == wt and r.add_worktree(wt, "miyabi/1-x", "main") is False  # there already
    w = Repository(wt)
    (wt / "b.txt").write_text("b\n")
    assert w.changed("main") == ["b.txt"] and w.dirty()
    sha = w.commit_all("task 1")
    assert sha and not w.dirty() and w.changed("main") == ["b.txt"] and w.commit_all("again") is None
    old = r.sha("main")
    with pytest.raises(GitError, match="moved meanwhile"):
        Repository(tmp_path / "r").advance("other", sha, old)  # no such branch at that value
    r.remove_worktree(wt)
    assert not wt.exists() and r.worktree_of("miyabi/1-x") is None


def test_retreat_moves_a_checked_out_branch_back_with_its_files_and_refuses_local_changes(tmp_path: Path) -> None:
    path = repo(tmp_path)
    r = Repository(path)
    old = r.sha("main")
    (path / "a.txt").write_text("new\n")
    new = r.commit_all("new")
    assert new is not None
    (path / "a.txt").write_text("mine\n")  # a person's change in the checkout: never lost
    with pytest.raises(GitError, match=r"has local changes; main was not moved back .*git reset --keep"):
        r.retreat("main", old, new)
    assert r.sha("main") == new and (path / "a.txt").read_text() == "mine\n"
    (path / "a.txt").write_text("new\n")
    (path / "untracked.txt").write_text("x\n")  # untracked files are no local change of its files
    with pytest.raises(GitError, match=r"main moved since"):
        r.retreat("main", old, old)  # it is not at the commit that landed: left alone
    r.retreat("main", old, new)
    assert r.sha("main") == old and (path / "a.txt").read_text() == "a\n" and (path / "untracked.txt").exists()


def test_retreat_of_a_branch_checked_out_nowhere_is_a_compare_and_swap(tmp_path: Path) -> None:
    path = repo(tmp_path)
    r = Repository(path)
    old = r.sha("main")
    subprocess.run(["git", "checkout", "-q", "-b", "side"], cwd=path, check=True)
    (path / "b.txt").write_text("b\n")
    new = r.commit_all("b")
    assert new is not None
    subprocess.run(["git", "branch", "-q", "-f", "base", new], cwd=path, check=True)
    with pytest.raises(GitError, match="moving base back"):
        r.retreat("base", old, old)  # the ref is not at the second value: nothing changes
    assert r.sha("base") == new
    r.retreat("base", old, new)
    assert r.sha("base") == old and r.sha("side") == new
