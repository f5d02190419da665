"""The controller: the composition root that runs delivery, supervision and
scheduling for one home, and the controller as a process (start, stop, requests,
service unit).

The names below are imported on first use (PEP 562), so that the keep-alive
(``python -m miyabi.controller.keepalive``), which imports this package first, starts
on the standard library alone."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from miyabi.controller.process import ControllerRunning, read_pid, running_pid, start_background, stop_background

__all__ = ["ControllerRunning", "read_pid", "running_pid", "start_background", "stop_background"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("miyabi.controller.process"), name)
    raise AttributeError(name)
