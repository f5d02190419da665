"""Removing the worktrees whose work was merged (or whose pull request was closed):
by the controller after a pass that finds some, and by ``miyabi gc``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from miyabi.events import EventKind, append_event
from miyabi.pipeline.git import GitError, Repository
from miyabi.pipeline.locks import RepoLock
from miyabi.pipeline.records import InstanceState, Records, WorktreeState

log = logging.getLogger("miyabi.pipeline")


def remove_merged(records: Records, home_root: Path, lock: Callable[[Path], RepoLock] | None = None) -> list[str]:
    """Remove the worktrees of ``records`` whose work was merged (or whose pull request
    was closed) and that no live instance uses (``lock``: the repository's, held while
    git runs). Returns their paths; one that git will not remove is logged and left."""
    out: list[str] = []
    for w in records.worktrees(WorktreeState.MERGED, WorktreeState.CLOSED):
        with lock(w.repo) if lock is not None else RepoLock(home_root, w.repo, threading.Lock()):
            # read under the lock: an instance that started meanwhile keeps its worktree
            if w.path in {i.path for i in records.instances(InstanceState.PREPARING, InstanceState.READY)}:
                continue
            try:
                Repository(w.repo).remove_worktree(w.path)
            except GitError as e:
                log.warning("could not remove worktree %s: %s", w.path, e)
                continue
        records.set_worktree_state(w.repo, w.branch, WorktreeState.REMOVED)
        append_event(home_root, EventKind.WORKTREE_REMOVED, path=str(w.path), branch=w.branch)
        out.append(str(w.path))
    return out
