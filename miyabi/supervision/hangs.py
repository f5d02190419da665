"""What the watchdog sees of a live agent that may hang: how long it has been silent,
whether it shows itself ready, whether its process tree uses CPU, since when it was
nudged. :func:`~miyabi.supervision.policy.on_silence` decides on what this samples."""

from __future__ import annotations

from collections.abc import Callable

from miyabi import defaults
from miyabi.agents.hooks import Activity
from miyabi.agents.screen import looks_ready
from miyabi.config.model import Agent
from miyabi.supervision.policy import Silence
from miyabi.supervision.watches import Typist, Watch
from miyabi.tmux.driver import PaneDriver
from miyabi.tmux.panes import Pane


def sample(
    agent: Agent,
    w: Watch,
    pane: Pane,
    mono: float,
    now: float,
    last_output: float,
    typist: Typist | None,
    driver: PaneDriver,
    save: Callable[[], None],
) -> Silence | None:
    """What the watchdog sees of a live agent now (``mono``: ``time.monotonic()``,
    ``now``: Unix time, ``last_output``: monotonic time of its pane's last output),
    or None when there is nothing to decide (it printed recently, or a first CPU
    sample was just taken). Updates ``w`` (and calls ``save`` when it forgave a hang).

    Cheap first: silence comes from ``%output``. Only a silent agent costs a
    screen read, and only a silent agent that is not ready a CPU sample."""
    started_mono = mono - max(0.0, now - w.started)
    last_out = max(last_output, started_mono)
    delivered = typist.last_delivered if typist is not None else None
    # Output within ECHO_GRACE of a delivery is the terminal echoing our own text.
    answered = delivered is None or last_out > delivered + defaults.ECHO_GRACE
    since_delivery = None if answered or delivered is None else mono - delivered
    silent = mono - last_out if agent.profile.ready_pattern else since_delivery
    if silent is None or silent < agent.watchdog.silence_timeout:
        w.cpu_base = None
        if w.hung or w.nudged_at is not None:
            w.hung, w.nudged_at = False, None
            save()
        return None
    ready: bool | None = None
    if typist is not None:
        state = typist.state(pane)[0]
        if state in (Activity.WAITING_APPROVAL, Activity.HUMAN, Activity.PARKED):  # waiting: never a hang
            return None
        if agent.profile.ready_pattern or agent.profile.hooks:
            ready = state is Activity.READY
    elif agent.profile.ready_pattern:
        ready = looks_ready(agent.profile, driver.screen(pane.pane_id))
    cpu_busy = False
    if not ready:
        busy = _cpu_busy(w, mono)
        if busy is None:
            return None
        cpu_busy = busy
    nudged_for = (mono - w.nudged_at) if w.nudged_at is not None and last_out <= w.nudged_at else None
    if w.nudged_at is not None and last_out > w.nudged_at:  # it spoke: forgive
        w.nudged_at, w.hung = None, False
    return Silence(
        silent_for=mono - last_out,
        ready=ready,
        since_delivery=since_delivery,
        cpu_busy=cpu_busy,
        nudged_for=nudged_for,
    )


def _cpu_busy(w: Watch, mono: float) -> bool | None:
    """Whether the agent's process tree used more than ``defaults.CPU_BUSY`` of a CPU
    since the last sample; None when there is no answer yet (the first sample, or the
    process is gone)."""
    import psutil  # here: `miyabi status` reads the watchdog's records without it

    try:
        proc = psutil.Process(w.pid)
        cpu = sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])
    except psutil.Error:
        return None
    if w.cpu_base is None:  # first sample: decide at the next check
        w.cpu_base = (cpu, mono)
        return None
    base_cpu, base_t = w.cpu_base
    w.cpu_base = (cpu, mono)
    return (cpu - base_cpu) / max(mono - base_t, 1e-3) > defaults.CPU_BUSY
