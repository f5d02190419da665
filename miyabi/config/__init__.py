"""The bottom of miyabi's service layers: the layout file, its typed form, the settings
types it holds, and what it needs of this machine (preflight).

``load``, ``Agent`` and ``Layout`` are imported on first use (PEP 562), so that reading
one settings type (``miyabi send``'s light path) does not load the YAML parser and the
loader. ``preflight`` is imported from its module (``miyabi.config.preflight``): the
module's name would shadow a function of the same name here."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from miyabi.config.loader import load
    from miyabi.config.model import Agent, Layout

_LAZY = {"load": "miyabi.config.loader", "Agent": "miyabi.config.model", "Layout": "miyabi.config.model"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = ["Agent", "Layout", "load"]
