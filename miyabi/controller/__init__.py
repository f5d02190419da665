"""The controller: the composition root that runs delivery, supervision and
scheduling for one home, and the controller as a process (start, stop, requests,
service unit)."""

from __future__ import annotations

from miyabi.controller.process import ControllerRunning, read_pid, running_pid, start_background, stop_background

__all__ = ["ControllerRunning", "read_pid", "running_pid", "start_background", "stop_background"]
