"""spec-kit task lists (``specs/NNN-feature/tasks.md``) as a task graph: pure functions.

GitHub's spec-kit (https://github.com/github/spec-kit, its ``templates/tasks-template.md``)
writes a feature's tasks as Markdown checkbox lines under phase headings::

    ## Phase 3: User Story 1 - Sign up (Priority: P1) 🎯 MVP
    ### Implementation for User Story 1
    - [ ] T012 [P] [US1] Create User model in src/models/user.py
    - [ ] T014 [US1] Implement UserService in src/services/user.py (depends on T012, T013)

:func:`parse` reads such a file into a :class:`TaskList` (or raises :class:`SpecKitError`
naming the line and what was expected); :func:`dependencies` turns it into edges:

- phases run in order: a phase's tasks wait for the phase before it; consecutive
  user-story phases (``User Story N`` in the heading) all wait for the phase before
  the first of them (Foundational) and may run side by side, and the phase after them
  waits for all of them;
- within a phase, a task without ``[P]`` waits for every task listed before it in that
  phase (the edges kept are to the previous task without ``[P]`` and to the ``[P]``
  tasks since it); a ``[P]`` task waits only for the phases before;
- ``(depends on T010, T011)`` adds edges (to any task of the file).

Only the phase's first tasks get the edges from the phase before (the others wait for
them in turn), and only the last tasks of a phase (those no task of the phase waits
for) are waited for by the next: the graph stays small. :func:`tick` is the text with
one task's box ticked. Nothing here reads or writes files except :func:`tick_file`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from miyabi.errors import MiyabiError
from miyabi.files import write_atomic


class SpecKitError(MiyabiError):
    """A task list does not parse: ``FILE:LINE: what was expected``."""


@dataclass(frozen=True)
class Item:
    """One task line.

    Attributes:
        id: ``T012``.
        text: the description after the id and its markers.
        line: its line number (1-based).
        phase: the index of its phase in :attr:`TaskList.phases` (0-based).
        done: the box is ticked (``[x]``).
        parallel: marked ``[P]``.
        story: its ``[USn]`` marker (``US1``), if any.
        after: the ids it says it depends on (``depends on T010, T011``).
    """

    id: str
    text: str
    line: int
    phase: int
    done: bool = False
    parallel: bool = False
    story: str | None = None
    after: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        """The description without its ``(depends on …)`` clause: the task's title."""
        return " ".join(DEPENDS_RE.sub(" ", self.text).split()) or self.text


@dataclass(frozen=True)
class Phase:
    """One ``## Phase N: Title`` section.

    Attributes:
        number: N as written (``N`` itself in spec-kit's template is refused).
        title: the heading after ``Phase N:``.
        line: the heading's line number.
        story: a user-story phase (``User Story`` in its title, or all its tasks
            marked ``[USn]``), which may run beside the user-story phases next to it.
    """

    number: int
    title: str
    line: int
    story: bool = False


@dataclass(frozen=True)
class TaskList:
    """A parsed ``tasks.md``.

    Attributes:
        feature: the feature's name (its folder, ``001-blog``): refs are ``feature#T012``.
        phases: in file order.
        items: the task lines, in file order.
    """

    feature: str
    phases: tuple[Phase, ...] = ()
    items: tuple[Item, ...] = field(default=())

    def ref(self, item: Item) -> str:
        """``001-blog#T012``."""
        return f"{self.feature}#{item.id}"


PHASE_RE = re.compile(r"^##\s+Phase\s+(?P<n>\S+?)\s*[:.–—-]\s*(?P<title>.*\S)?\s*$", re.IGNORECASE)
HEADING_RE = re.compile(r"^(#{1,2})\s")
BOX_RE = re.compile(r"^\s*[-*+]\s+\[(?P<mark>[^\]]?)\]\s*(?P<rest>.*)$")
ID_RE = re.compile(r"^T\d{3,}$")
MARKER_RE = re.compile(r"^\[(?P<m>P|US\d+)\]\s*", re.IGNORECASE)
DEPENDS_RE = re.compile(r"\(?\s*depends\s+on\s+(?P<ids>T\d+(?:\s*(?:,|and|&)\s*T\d+)*)\s*\)?", re.IGNORECASE)
STORY_RE = re.compile(r"\buser\s+story\b", re.IGNORECASE)
FENCE_RE = re.compile(r"^\s*(```|~~~)")
ID_IN_LINE = r"^(?P<head>\s*[-*+]\s+\[)[ xX](?P<tail>\]\s+{id}\b)"


def feature_of(path: Path) -> str:
    """The feature a ``specs/NNN-feature/tasks.md`` belongs to: its folder's name."""
    return path.resolve().parent.name or "tasks"


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line outside fenced code blocks."""
    fenced = False
    for n, raw in enumerate(text.splitlines(), 1):
        if FENCE_RE.match(raw):
            fenced = not fenced
        elif not fenced:
            yield n, raw


def _heading(raw: str, n: int, where: str) -> Phase | None:
    """The phase a ``#``/``##`` heading starts (None: another heading, which ends
    the phase before it).

    Raises:
        SpecKitError: a ``## Phase`` heading without its number or colon.
    """
    m = PHASE_RE.match(raw.strip())
    if m is None:
        if re.match(r"^##\s+Phase\b", raw.strip(), re.IGNORECASE):
            raise SpecKitError(f"{where}: expected a phase heading `## Phase N: Title`, found {raw.strip()!r}")
        return None
    if not m["n"].isdigit():
        raise SpecKitError(f"{where}: expected the phase's number in `## Phase N: Title`, found {m['n']!r}")
    title = (m["title"] or "").strip()
    return Phase(int(m["n"]), title, n, story=bool(STORY_RE.search(title)))


def _item(box: re.Match[str], n: int, where: str, phase: int | None, seen: dict[str, int]) -> Item | None:
    """The task of a checkbox line (None: a checklist line that is no task, such as
    ``- [ ] Tests pass``).

    Raises:
        SpecKitError: as :func:`parse` says.
    """
    mark, rest = box["mark"], box["rest"].strip()
    first = rest.split(maxsplit=1)[0] if rest else ""
    if not ID_RE.match(first):
        if not first.upper().startswith("T"):
            return None
        raise SpecKitError(f"{where}: expected a task id such as T001 after the box, found {first!r}")
    if mark not in (" ", "x", "X"):
        raise SpecKitError(f"{where}: expected `[ ]` or `[x]` before {first}, found [{mark}]")
    if phase is None:
        raise SpecKitError(f"{where}: task {first} is not under a `## Phase N: Title` heading")
    if first in seen:
        raise SpecKitError(f"{where}: task {first} is listed twice (also on line {seen[first]})")
    seen[first] = n
    body = rest[len(first) :].strip()
    parallel, story = False, None
    while (mk := MARKER_RE.match(body)) is not None:
        if mk["m"].upper() == "P":
            parallel = True
        else:
            story = mk["m"].upper()
        body = body[mk.end() :]
    if not body.strip():
        raise SpecKitError(f"{where}: expected a description after {first}")
    after = [t for dm in DEPENDS_RE.finditer(body) for t in re.findall(r"T\d+", dm["ids"])]
    return Item(
        first,
        body.strip(),
        n,
        phase,
        done=mark in ("x", "X"),
        parallel=parallel,
        story=story,
        after=tuple(dict.fromkeys(after)),
    )


def parse(text: str, feature: str, name: str = "tasks.md") -> TaskList:
    """Read a spec-kit task list.

    Args:
        text: the file's text.
        feature: its feature's name (:func:`feature_of`).
        name: the file, as errors name it.

    Returns:
        The phases and their tasks. Prose, ``###`` sub-headings, ``Checkpoint:`` lines,
        checklist lines with no task id and fenced code blocks are skipped; a
        ``#``/``##`` heading that is not a phase ends the phase before it.

    Raises:
        SpecKitError: ``FILE:LINE: …`` for a box with a malformed task id (``TXXX``), a
            mark other than a space or x, a task outside a phase, a phase heading
            without its number, a task with no description, an id used twice, a
            dependency on an id the file does not have or on itself, a cycle, or a file
            with no task at all.
    """
    phases: list[Phase] = []
    items: list[Item] = []
    seen: dict[str, int] = {}
    current: int | None = None
    for n, raw in _lines(text):
        if HEADING_RE.match(raw):
            phase = _heading(raw, n, f"{name}:{n}")
            if phase is not None:
                phases.append(phase)
            current = len(phases) - 1 if phase is not None else None
        elif (box := BOX_RE.match(raw)) is not None and (it := _item(box, n, f"{name}:{n}", current, seen)):
            items.append(it)
    if not items:
        raise SpecKitError(
            f"{name}: no tasks found; expected lines such as `- [ ] T001 [P] [US1] Description` "
            "under `## Phase N: Title` headings"
        )
    for it in items:
        for dep in it.after:
            if dep == it.id:
                raise SpecKitError(f"{name}:{it.line}: task {it.id} depends on itself")
            if dep not in seen:
                raise SpecKitError(f"{name}:{it.line}: task {it.id} depends on {dep}, which the file does not list")
    tl = TaskList(feature, tuple(_story_phases(phases, items)), tuple(items))
    cycle = find_cycle(dependencies(tl))
    if cycle:
        raise SpecKitError(f"{name}:{seen[cycle[0]]}: the dependencies go round in a cycle: {' → '.join(cycle)}")
    return tl


def _story_phases(phases: Sequence[Phase], items: Sequence[Item]) -> list[Phase]:
    """The phases, a phase whose tasks are all marked ``[USn]`` made a user-story phase."""
    out = []
    for i, ph in enumerate(phases):
        own = [it for it in items if it.phase == i]
        out.append(Phase(ph.number, ph.title, ph.line, story=True) if own and all(it.story for it in own) else ph)
    return out


def _within(own: Sequence[Item], deps: dict[str, list[str]]) -> list[str]:
    """Add the edges inside one phase; its ends (the tasks no task of it waits for)."""
    last_serial: str | None = None
    since: list[str] = []  # [P] tasks since the last serial one
    for it in own:
        if it.parallel:
            since.append(it.id)
            continue
        deps[it.id] += [d for d in ([last_serial] if last_serial else []) + since if d not in deps[it.id]]
        last_serial, since = it.id, []
    inner = {d for it in own for d in deps[it.id]}
    return [it.id for it in own if it.id not in inner]


def dependencies(tl: TaskList) -> dict[str, tuple[str, ...]]:
    """Each task's direct dependencies (ids), by the rules in this module's docstring."""
    deps: dict[str, list[str]] = {it.id: [] for it in tl.items}
    by_phase: list[list[Item]] = [[] for _ in tl.phases]
    for it in tl.items:
        by_phase[it.phase].append(it)
    before: list[str] = []  # what the next phase waits for
    stories: list[str] = []  # the ends of the run of user-story phases since the last other phase
    for phase, own in zip(tl.phases, by_phase, strict=True):
        waits = before if phase.story or not stories else stories
        ends = _within(own, deps)
        for it in own:
            if not deps[it.id]:  # waits for nothing in its phase: waits for the phase(s) before
                deps[it.id] += waits
        if phase.story:
            stories += ends
        else:
            before, stories = ends or waits, []
    for it in tl.items:
        deps[it.id] += [d for d in it.after if d not in deps[it.id]]
    return {k: tuple(v) for k, v in deps.items()}


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle (``[a, b, a]``), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in deps.get(node, ()):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = walk(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in deps:
        if node not in state:
            found = walk(node)
            if found:
                return found
    return None


def tick(text: str, task_id: str) -> str:
    """``text`` with task ``task_id``'s box ticked (``- [ ] T012`` → ``- [x] T012``);
    unchanged when it is ticked already or not there. Only the first line with that
    id outside fenced code changes."""
    pattern = re.compile(ID_IN_LINE.format(id=re.escape(task_id)))
    lines = text.splitlines(keepends=True)
    fenced = False
    for i, raw in enumerate(lines):
        if FENCE_RE.match(raw):
            fenced = not fenced
            continue
        if fenced:
            continue
        m = pattern.match(raw)
        if m:
            lines[i] = raw[: m.end("head")] + "x" + raw[m.start("tail") :]
            return "".join(lines)
    return text


def tick_file(path: Path, task_id: str) -> bool:
    """Tick ``task_id``'s box in the file at ``path`` (written atomically, its mode
    kept); whether the file changed. A missing file changes nothing. Tickers of one
    folder take turns (an ``flock`` on the folder, which leaves no lock file beside the
    user's list), so two tasks done at once never lose each other's tick.

    Raises:
        OSError: the file cannot be read or written.
    """
    import fcntl

    if not path.parent.is_dir():
        return False
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        if not path.is_file():
            return False
        text = path.read_text(encoding="utf-8")
        new = tick(text, task_id)
        if new == text:
            return False
        mode = path.stat().st_mode & 0o777
        write_atomic(path, new)
        os.chmod(path, mode)  # a file of the user's keeps its mode (write_atomic makes 0600)
        return True
    finally:
        os.close(folder)  # and with it the lock
