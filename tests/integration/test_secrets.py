"""No secret the layout names (``github.token_env``, ``bus.password_env``, a notify
receiver's ``url_env``, an inline bus password) reaches an agent's environment or the
environment of miyabi's tmux server (which every process on its socket can print with
``show-environment -g``), even when the shell that ran ``miyabi up`` holds them, after
a respawn, and after the controller rebuilt a tmux server that died."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from helpers import wait_for, write_layout
from integration.conftest import Cli, environ_of
from redisserver import RedisServer

from miyabi.errors import TmuxError
from miyabi.tmux.runner import Tmux

SECRETS = {
    "T_GH_TOKEN": "ghp_secret_token_0001",
    "T_BUS_PASSWORD": "bus-secret-0002",
    "T_HOOK_URL": "https://hooks.example/secret-0003",
    "GH_TOKEN": "gh-cli-secret-0004",
}
INLINE = "inline-secret-0005"


def layout(tmp_path: Path, redis_url: str) -> Path:
    """Every kind of secret a layout can name: GitHub's token, the bus's password (in the
    environment and inline in its URL), a webhook's URL."""
    return write_layout(
        tmp_path / "secrets.yaml",
        [("a", "shell", "cat"), ("b", "shell", "cat")],
        session="secrets",
        github={
            "repo": "acme/widgets",
            "api_url": "http://127.0.0.1:9",
            "token_env": "T_GH_TOKEN",
            "poll_interval": 60,
        },
        bus={
            "url": redis_url.replace("redis://", f"redis://:{INLINE}@"),
            "host": "h1",
            "password_env": "T_BUS_PASSWORD",
        },
        notify=[{"kind": "webhook", "url_env": "T_HOOK_URL"}],
        watchdog={"min_uptime": 0, "max_restarts": 100, "restart_window": 600},
    )


def leaks(text: str) -> list[str]:
    return [v for v in [*SECRETS.values(), INLINE] if v in text]


def test_no_secret_reaches_an_agent_or_the_tmux_server(
    cli: Cli, home: Path, tmp_path: Path, tmux: Tmux, panes, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis = RedisServer(tmp_path / "redis", password=SECRETS["T_BUS_PASSWORD"])
    redis.start()
    try:
        for k, v in SECRETS.items():  # the user's shell holds them when it runs `miyabi up`
            monkeypatch.setenv(k, v)
        assert cli("up", str(layout(tmp_path, redis.url)), "-d").exit_code == 0

        def clean_everywhere(not_pids: tuple[int, ...] = ()) -> bool:
            try:
                now = panes("secrets")
            except TmuxError:  # the server is down, being rebuilt
                return False
            if set(now) != {"a", "b"} or any(p.dead or p.pid in not_pids for p in now.values()):
                return False
            for p in now.values():
                env = environ_of(p.pid)
                if env.get("MIYABI_AGENT") != p.agent:  # still exec-ing its way to the agent's program
                    return False
                assert not leaks("\n".join(f"{k}={v}" for k, v in env.items())), (p.agent, leaks(str(env)))
            assert not leaks("\n".join(tmux.run("show-environment", "-g"))), "the server's global environment"
            assert not leaks("\n".join(tmux.run("show-environment", "-t", "=secrets:"))), "the session's environment"
            return True

        first = wait_for(clean_everywhere, what="both agents running") and panes("secrets")
        os.kill(first["a"].pid, signal.SIGKILL)  # the controller respawns it
        wait_for(lambda: clean_everywhere((first["a"].pid,)), what="a respawned, clean")
        before = panes("secrets")
        tmux.run("kill-server")  # the controller (which holds the secrets) builds it again
        wait_for(
            lambda: clean_everywhere(tuple(p.pid for p in before.values())), timeout=30, what="the session rebuilt"
        )
    finally:
        cli("down")
        redis.stop()
