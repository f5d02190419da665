"""The git operations of the pipeline, on GitPython (which runs the ``git`` program):
worktrees per task, what a task changed, committing, pushing, and the staged merge
of local mode.

Every failure is a :class:`GitError` whose message is one line: the operation, the
repository, and git's own last line of complaint. Git runs without the controller's
secrets in its environment (hooks and credential helpers never see the GitHub token),
never asks on a terminal (``GIT_TERMINAL_PROMPT=0``), and is stopped after
``defaults.GIT_TIMEOUT`` seconds; the commands miyabi itself makes (commit, merge,
push) run no repository hooks (``core.hooksPath=/dev/null``): an agent's change must
not run code of its own in the controller.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import git

from miyabi import defaults
from miyabi.errors import MiyabiError

IDENTITY = ("miyabi", "miyabi@localhost")
"""Committer used when the repository has no ``user.name``/``user.email`` of its own."""


class GitError(MiyabiError):
    """A git operation failed."""


def _why(e: git.exc.GitCommandError) -> str:
    """Git's own complaint in one line: its first ``fatal:``/``error:`` line, else its
    last line (GitPython wraps stderr as ``stderr: '…'``)."""
    text = str(e.stderr or e.stdout or "").strip()
    text = text.removeprefix("stderr:").strip().removeprefix("stdout:").strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        text = text[1:-1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    pick = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), lines[-1] if lines else "")
    return pick.removeprefix("fatal: ").removeprefix("error: ") or f"git exited {e.status}"


@contextmanager
def _errors(what: str) -> Iterator[None]:
    try:
        yield
    except git.exc.GitCommandError as e:
        raise GitError(f"{what}: {_why(e)}") from None
    except (git.exc.InvalidGitRepositoryError, git.exc.NoSuchPathError):
        raise GitError(f"{what}: not a git repository") from None
    except git.exc.GitError as e:
        raise GitError(f"{what}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


class Repository:
    """A git repository (its main worktree or any linked one).

    Args:
        path: a directory inside it.
        hide: environment variables git and what it runs never see (the layout's
            secrets, see ``Layout.secret_env``).

    Raises:
        GitError: ``path`` is not in a git repository.
    """

    def __init__(self, path: Path, hide: Iterable[str] = defaults.SECRET_ENV) -> None:
        self.path = path
        self.hide = tuple(hide)
        with _errors(f"opening {path}"):
            self.repo = git.Repo(path, search_parent_directories=False)
        self.g = self.repo.git
        self.g.update_environment(GIT_TERMINAL_PROMPT="0", **{var: "" for var in self.hide})

    def _run(self, *args: str) -> str:
        """``git ARGS`` with miyabi's identity where the repository has none, no hooks,
        and the time limit: every command that changes something goes through here."""
        out: str = self.g.execute(
            ["git", "-c", "core.hooksPath=/dev/null", *self._identity(), *args], kill_after_timeout=defaults.GIT_TIMEOUT
        )
        return out

    def current_branch(self) -> str | None:
        """The branch checked out here (None: a detached HEAD).

        Raises:
            GitError: the repository has no commit yet.
        """
        with _errors(f"{self.path}: reading its branch (does it have a commit?)"):
            out: str = self.g.rev_parse("--abbrev-ref", "HEAD")
        return None if out == "HEAD" else out

    def sha(self, ref: str) -> str:
        with _errors(f"{self.path}: no commit {ref!r}"):
            out: str = self.g.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
            return out

    def has_branch(self, branch: str) -> bool:
        try:
            self.g.rev_parse("--verify", "--quiet", f"refs/heads/{branch}")
            return True
        except git.exc.GitCommandError:
            return False

    def read_at(self, ref: str, relpath: str) -> str | None:
        """The text of ``relpath`` at ``ref`` (None: no such file there)."""
        try:
            out: str = self.g.show(f"{ref}:{relpath}")
            return out
        except git.exc.GitCommandError:
            return None

    # -- worktrees

    def add_worktree(self, path: Path, branch: str, base: str) -> bool:
        """Check ``branch`` out at ``path``: a new branch from ``base``, or the branch
        as it is when it exists. A directory left at ``path`` by an interrupted earlier
        attempt (not a worktree of ``branch``) is cleared first: ``path`` must be one
        of miyabi's own. Returns True when the branch was made.

        Raises:
            GitError: git refused (the branch is checked out elsewhere, …).
        """
        if path.exists():
            if self.worktree_of(branch) == path:
                return False
            shutil.rmtree(path, ignore_errors=True)
            with _errors(f"{self.path}: pruning worktrees"):
                self._run("worktree", "prune")
        fresh = not self.has_branch(branch)
        with _errors(f"{self.path}: adding worktree {path} on {branch}"):
            if fresh:
                self._run("worktree", "add", "-b", branch, str(path), base)
            else:
                self._run("worktree", "add", str(path), branch)
        return fresh

    def add_detached(self, path: Path, ref: str) -> None:
        with _errors(f"{self.path}: adding a worktree at {ref}"):
            self._run("worktree", "add", "--detach", str(path), ref)

    def remove_worktree(self, path: Path) -> None:
        """Remove a linked worktree (and what it holds), then prune git's record of it."""
        with _errors(f"{self.path}: removing worktree {path}"):
            if path.exists():
                try:
                    self._run("worktree", "remove", "--force", "--force", str(path))
                except git.exc.GitCommandError:
                    shutil.rmtree(
                        path, ignore_errors=True
                    )  # not (or no longer) a worktree git knows: ours all the same
            self._run("worktree", "prune")

    def worktree_of(self, branch: str) -> Path | None:
        """Where ``branch`` is checked out, if anywhere."""
        with _errors(f"{self.path}: listing worktrees"):
            out: str = self.g.worktree("list", "--porcelain")
        path: str | None = None
        for line in out.splitlines():
            if line.startswith("worktree "):
                path = line[9:]
            elif line == f"branch refs/heads/{branch}" and path:
                return Path(path)
        return None

    # -- changes

    def changed(self, base: str) -> list[str]:
        """Paths this worktree changed against ``base``: committed since their merge
        base, staged, unstaged and untracked (not ignored), relative, ``/``-separated."""
        with _errors(f"{self.path}: listing changes"):
            committed: str = self.g.diff("--name-only", f"{base}...HEAD")
            status: str = self.g.status("--porcelain", "-z", "--untracked-files=all")
        paths = set(filter(None, committed.splitlines()))
        entries = status.split("\0")
        i = 0
        while i < len(entries):
            e = entries[i]
            if len(e) > 3:
                paths.add(e[3:])
                if e[0] in "RC":  # a rename's source follows
                    i += 1
                    if i < len(entries) and entries[i]:
                        paths.add(entries[i])
            i += 1
        return sorted(paths)

    def dirty(self) -> bool:
        with _errors(f"{self.path}: reading its status"):
            return bool(self.g.status("--porcelain", "--untracked-files=all"))

    def commit_all(self, message: str) -> str | None:
        """Commit everything uncommitted (untracked files included); the new commit's
        sha, or None when there was nothing to commit."""
        if not self.dirty():
            return None
        with _errors(f"{self.path}: committing"):
            self._run("add", "-A")
            self._run("commit", "-q", "--no-verify", "-m", message)
        return self.sha("HEAD")

    def _identity(self) -> list[str]:
        r = self.repo.config_reader()
        have_name = r.has_option("user", "name")
        have_mail = r.has_option("user", "email")
        out: list[str] = []
        if not have_name:
            out += ["-c", f"user.name={IDENTITY[0]}"]
        if not have_mail:
            out += ["-c", f"user.email={IDENTITY[1]}"]
        return out

    def push(self, remote: str, sha: str, branch: str) -> None:
        """Push commit ``sha`` to ``remote`` as its ``branch`` (the commit that was
        checked, whatever the worktree holds by now).

        Raises:
            GitError: the remote refused (it moved: not a fast-forward; no access).
        """
        with _errors(f"{self.path}: pushing {branch} to {remote}"):
            self._run("push", "--quiet", "--no-verify", remote, f"{sha}:refs/heads/{branch}")

    # -- local mode: a merge behind the checks

    def merge_into_detached(self, branch: str, message: str) -> str:
        """Merge ``branch`` into this (detached) worktree's HEAD with a merge commit;
        returns its sha.

        Raises:
            GitError: a conflict (the merge is aborted first) or another failure.
        """
        try:
            self._run("merge", "--no-ff", "--no-edit", "-m", message, branch)
        except git.exc.GitCommandError as e:
            try:
                self.g.merge("--abort")
            except git.exc.GitCommandError:
                pass
            why = _why(e)
            if "conflict" in (e.stdout or "").lower() or "conflict" in why.lower():
                files = re.findall(r"CONFLICT \([^)]*\): .*? in (\S+)", e.stdout or "")
                why = "merge conflict" + (f" in {', '.join(files)}" if files else "")
            raise GitError(f"merging {branch}: {why}") from None
        return self.sha("HEAD")

    def reset_detached(self, sha: str, keep_ignored: bool = False) -> None:
        """Make this (miyabi's own, detached) worktree hold exactly commit ``sha``:
        changes and untracked files, ignored ones included (unless ``keep_ignored``:
        a deploy checkout keeps its ``node_modules/``), are thrown away."""
        with _errors(f"{self.path}: resetting to {sha[:12]}"):
            self._run("checkout", "--quiet", "--detach", "--force", sha)
            self._run("clean", "-fdq" if keep_ignored else "-fdxq")

    def advance(self, branch: str, new: str, old: str) -> None:
        """Move ``branch`` from ``old`` to ``new`` (a descendant): where it is checked
        out, by a fast-forward merge there (which keeps that worktree's files in step);
        else by a compare-and-swap of the ref, so a branch that moved meanwhile is
        never overwritten.

        Raises:
            GitError: it moved meanwhile, or its checkout has changes in the way.
        """
        where = self.worktree_of(branch)
        if where is not None:
            wt = Repository(where, self.hide)
            if wt.sha("HEAD") != old:
                raise GitError(f"{branch} moved while the merge was checked; nothing landed")
            with _errors(f"{where}: fast-forwarding {branch} (local changes in the way?)"):
                wt._run("merge", "--ff-only", "--quiet", new)
            return
        with _errors(f"{self.path}: moving {branch} (it moved meanwhile?)"):
            self._run("update-ref", f"refs/heads/{branch}", new, old)

    def retreat(self, branch: str, old: str, new: str) -> None:
        """Move ``branch`` back from ``new`` to ``old`` (an ancestor): :meth:`advance`
        in reverse. Where it is checked out, by ``git reset --keep`` there (which keeps
        that worktree's files in step), refused when the worktree has local changes
        to tracked files; else by a compare-and-swap of the ref, so a branch that moved
        meanwhile is never overwritten.

        Raises:
            GitError: it moved meanwhile, or its checkout has local changes.
        """
        where = self.worktree_of(branch)
        if where is not None:
            wt = Repository(where, self.hide)
            if wt.sha("HEAD") != new:
                raise GitError(f"{branch} moved since {new[:12]} landed; it was not moved back")
            with _errors(f"{where}: reading its status"):
                changed = bool(wt.g.status("--porcelain", "--untracked-files=no"))
            if changed:
                raise GitError(
                    f"{where} has local changes; {branch} was not moved back to {old[:12]} "
                    "(commit or stash them, then run: git reset --keep " + old[:12] + ")"
                )
            with _errors(f"{where}: moving {branch} back"):
                wt._run("reset", "--keep", "--quiet", old)
            return
        with _errors(f"{self.path}: moving {branch} back (it moved meanwhile?)"):
            self._run("update-ref", f"refs/heads/{branch}", old, new)

    def diff(self, base: str, head: str) -> str:
        """``git diff base...head``: what ``head`` changed since its merge base with ``base``."""
        with _errors(f"{self.path}: diffing {base}...{head}"):
            out: str = self.g.diff(f"{base}...{head}")
        return out
