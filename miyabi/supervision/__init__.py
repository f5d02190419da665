"""Keeping agents running: the restart policy (pure), the supervisor (crashes, hangs,
restarts), the session keeper, processes, and ``miyabi status``."""
