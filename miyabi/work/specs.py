"""Tasks from plans: a spec-kit task list imported (:func:`import_list`) and a task spec
added (:func:`add_spec`) into the task store.

An imported list is one transaction: every new line becomes a local task with the key
``speckit:FEATURE#Tnnn`` (its ref ``FEATURE#Tnnn``), its dependencies as edges in
``deps`` (:func:`miyabi.work.speckit.dependencies`), stored ``blocked`` while a
dependency is open (the scheduler queues it when they are done, as for ``task add
--depends-on``), ``done`` when its box is ticked already, else ``queued``. Importing the
file again adds only its new lines (their edges may point at tasks imported before),
leaves every task imported before as it is, and reports the lines that disappeared.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miyabi import defaults
from miyabi.errors import display_path
from miyabi.files import private_dir
from miyabi.work import speckit, stories
from miyabi.work.base import SPECKIT_KEY, TASK_SPEC_KEY
from miyabi.work.model import Source, Task, TaskError, TaskState
from miyabi.work.store import Store
from miyabi.work.taskspec import KIND_SPECKIT, KIND_TASK, SpecError, TaskSpec

ARTIFACTS = "artifacts"
"""The folder under the home holding each task spec's artifacts folder (``artifacts/ID/``)."""


@dataclass
class ImportReport:
    """What an import did.

    Attributes:
        file: the list.
        feature: its feature (``001-blog``).
        added: (ref, task id) of each task it stored.
        unchanged: (ref, task id) of each line imported before.
        disappeared: (ref, task id) of each task imported before whose line is gone.
    """

    file: Path
    feature: str
    added: list[tuple[str, int]] = field(default_factory=list)
    unchanged: list[tuple[str, int]] = field(default_factory=list)
    disappeared: list[tuple[str, int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def rows(pairs: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
            return [{"ref": r, "id": i} for r, i in pairs]

        return {
            "file": str(self.file),
            "feature": self.feature,
            "added": rows(self.added),
            "unchanged": rows(self.unchanged),
            "disappeared": rows(self.disappeared),
        }


def repo_of(path: Path) -> tuple[Path | None, str | None]:
    """The git repository a file is in and its path there (``None, None``: in none)."""
    try:
        top = subprocess.run(
            ["git", "-C", str(path.parent), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=defaults.GIT_TIMEOUT,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    if not top:
        return None, None
    root = Path(top).resolve()
    try:
        return root, path.resolve().relative_to(root).as_posix()
    except ValueError:
        return None, None


def _body(tl: speckit.TaskList, it: speckit.Item, where: str) -> str:
    """The task's text: where its line is (its path in the repository, else absolute)."""
    phase = tl.phases[it.phase]
    return (
        f"From {where} line {it.line} (Phase {phase.number}: {phase.title}).\n"
        f"miyabi ticks its box when the work lands; leave the box as it is."
    )


def import_list(
    store: Store,
    path: Path,
    labels: Sequence[str] = (),
    priority: str = "normal",
) -> ImportReport:
    """Import a spec-kit ``tasks.md`` (see the module's docstring).

    Args:
        store: the task store.
        path: the file.
        labels: labels every new task gets besides its ``USn`` (``agent:NAME`` routes them).
        priority: the new tasks' priority.

    Raises:
        SpecKitError: the file cannot be read or does not parse (``FILE:LINE: …``).
        TaskError: a bad priority.
    """
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise speckit.SpecKitError(f"{shown}: no such file; give the path of a spec-kit tasks.md") from None
    except (OSError, UnicodeDecodeError) as e:
        raise speckit.SpecKitError(f"{shown}: cannot read the file: {getattr(e, 'strerror', None) or e}") from None
    feature = speckit.feature_of(path)
    tl = speckit.parse(text, feature, shown)
    deps = speckit.dependencies(tl)
    repo, rel = repo_of(path)
    report = ImportReport(path.resolve(), feature)
    prefix = SPECKIT_KEY + feature + "#"
    with store.tx() as db:
        known = {
            str(r["key"])[len(prefix) :]: (int(r["id"]), str(r["state"]))
            for r in db.execute(
                "SELECT id, key, state FROM tasks WHERE source=? AND key LIKE ? ESCAPE '\\'",
                (str(Source.LOCAL), _like_prefix(prefix)),
            )
        }
        ids = {k: v[0] for k, v in known.items()}
        states = {k: v[1] for k, v in known.items()}
        for it in tl.items:
            ref = tl.ref(it)
            if it.id in ids:
                report.unchanged.append((ref, ids[it.id]))
                continue
            on = [ids[d] for d in deps[it.id]]
            waiting = any(states.get(d) not in (TaskState.DONE, TaskState.CANCELLED) for d in deps[it.id])
            state = TaskState.DONE if it.done else (TaskState.BLOCKED if waiting else TaskState.QUEUED)
            facts = {
                "kind": KIND_SPECKIT,
                "ref": ref,
                "feature": feature,
                "id": it.id,
                "file": str(path.resolve()),
                "repo": str(repo) if repo else None,
                "path": rel,
                "line": it.line,
                "phase": tl.phases[it.phase].number,
                "story": it.story,
                "parallel": it.parallel,
            }
            tid = store.insert(
                db,
                it.title,
                _body(tl, it, rel or str(path.resolve())),
                [*([it.story] if it.story else []), *labels],
                priority,
                on,
                key=SPECKIT_KEY + ref,
                spec=json.dumps(facts),
                state=state,
                reason=f"imported from {shown} line {it.line}" + (" (ticked there already)" if it.done else ""),
            )
            ids[it.id], states[it.id] = tid, str(state)
            report.added.append((ref, tid))
        listed = {it.id for it in tl.items}
        report.disappeared = sorted(
            ((feature + "#" + k, v[0]) for k, v in known.items() if k not in listed), key=lambda p: p[1]
        )
    return report


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching text that starts with ``prefix`` (its ``%``, ``_`` and
    ``\\`` escaped)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def artifacts_dir(home_root: Path, spec_id: str) -> Path:
    """``artifacts/ID/`` under the home (a task spec's id has no ``/``)."""
    return home_root / ARTIFACTS / spec_id


def add_spec(store: Store, spec: TaskSpec, home_root: Path, owners: Sequence[str] | None) -> Task:
    """Store the task of a task spec: its owner as an ``agent:NAME`` label (the route),
    its text from the spec's keys, its spec in the ``spec`` column (for the verify
    gate's ``tests`` and the deploy's ``acceptance``), and, when it names
    ``artifacts``, the folder ``artifacts/ID/`` under the home (0700), named in its
    message.

    Args:
        owners: the agents and pools of the layout, to check ``owner`` against (None:
            no layout is known; a spec with an owner is then refused).

    Raises:
        SpecError: its owner is unknown (one line naming the file and the known names).
        TaskError: a task spec with the same id was added already.
    """
    owner = spec.owner
    if owner is not None and (owners is None or owner not in owners):
        known = ", ".join(sorted(owners)) if owners else "none known: run `miyabi up` first"
        raise SpecError([f"{display_path(spec.file)}: owner: no agent or pool {owner!r} in the layout ({known})"])
    folder = artifacts_dir(home_root, spec.id) if spec.items("artifacts") else None
    facts = {
        "kind": KIND_TASK,
        "ref": TASK_SPEC_KEY + spec.id,
        "file": str(spec.file),
        **spec.data,
        "artifacts_dir": str(folder) if folder else None,
    }
    with store.tx() as db:
        taken = db.execute(
            "SELECT id, state FROM tasks WHERE source=? AND key=?", (str(Source.LOCAL), TASK_SPEC_KEY + spec.id)
        ).fetchone()
        if taken is not None:
            raise TaskError(
                f"task spec {spec.id!r} was added already, as task {taken['id']} ({taken['state']}); "
                "give the spec a new id"
            )
        if folder is not None:
            private_dir(folder)
        tid = store.insert(
            db,
            spec.title,
            spec.body(folder),
            [f"agent:{owner}"] if owner else [],
            spec.priority,
            key=TASK_SPEC_KEY + spec.id,
            spec=json.dumps(facts),
            reason=f"added from task spec {display_path(spec.file)}",
        )
    return store.get(tid)


def attach_story(store: Store, story: int | None, task_ids: Sequence[int], agent: str | None) -> int | None:
    """Put tasks ``task_ids`` in story ``story`` (:func:`miyabi.work.stories.attach`); with
    no ``story``, in the story whose planning task ``agent`` holds, when there is
    exactly one. Returns the story (None: none).

    Raises:
        StoryError: as ``attach`` (no such story, or it is finished).
    """
    if story is None and agent:
        story = stories.story_of_agent(store, agent)
    if story is not None and task_ids:
        stories.attach(store, story, list(task_ids))
    return story
