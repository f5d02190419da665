"""Hosts for the bus benchmarks: each a miyabi home with its own controller and tmux
server (a private socket), sharing a private redis-server on 127.0.0.1 (append-only
file on, in a temporary directory)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import redis
from _ensemble import MIYABI, down, kill_all

WORKER = "profile: worker, submit_delay: 0.05, ready_settle: 0.05"
WATCHDOG = "{min_uptime: 0, max_restarts: 1000, restart_window: 600}"
"""A host's ``watchdog:`` unless it says otherwise."""


class Redis:
    """A private redis-server; :meth:`restart` kills it (SIGKILL) and starts it again on its files."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is missing: apt-get install redis-server (scripts/test installs it)")
        self.binary, self.dir = binary, directory
        directory.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                self.client().ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class Host:
    """One machine: a home, a tmux server of its own, a layout with ``bus:`` (``extra``:
    more top-level lines of the layout, such as ``tasks: {...}``; ``specs``: an agent's
    own keys instead of ``spec``)."""

    def __init__(
        self,
        root: Path,
        name: str,
        url: str,
        agents: list[str],
        lease: float = 5.0,
        spec: str = WORKER,
        watchdog: str = WATCHDOG,
        extra: Sequence[str] = (),
        specs: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.home = root / name
        self.home.mkdir(parents=True)
        self.socket = f"bench_bus_{uuid.uuid4().hex[:8]}"
        self.session = f"bus-{name}"
        self.layout = root / f"{name}.yaml"
        lines = [
            f"session: {self.session}",
            f"bus: {{url: '{url}', host: {name}, lease: {lease}s}}",
            f"watchdog: {watchdog}",
            *extra,
            "agents:",
        ]
        lines += [f"  - {{name: {a}, {(specs or {}).get(a, spec)}}}" for a in agents]
        self.layout.write_text("\n".join(lines) + "\n")

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [MIYABI, *args, "--socket", self.socket, "--home", str(self.home)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"miyabi {' '.join(args)} on host {self.name} exited {done.returncode}: {done.stderr.strip()}"
            )
        return done.stdout

    def up(self) -> None:
        self.run("up", str(self.layout), "-d")

    def kill(self) -> None:
        """The machine dies: every process of this host at once, by SIGKILL (keep-alive,
        controller, its tmux server and clients, its agents), until none is left."""
        kill_all(self.home, self.socket)

    def close(self) -> None:
        down(self.home, self.socket)
