"""A private Redis for the bus tests: Debian's ``redis-server`` on 127.0.0.1 at a free
port, with its append-only file in a directory of the test's own (so a restart keeps
the queue, as the bus requires), optionally with a password. Never the machine's
default Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, directory: Path, password: str | None = None, tls: bool = False) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing; scripts/test installs it (apt-get install redis-server)"
        self.binary = binary
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.tls = tls
        self.port = free_port()
        self.cert = self.dir / "cert.pem"
        if tls:  # a self-signed certificate for 127.0.0.1, which clients are told to trust
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    str(self.dir / "key.pem"),
                    "-out",
                    str(self.cert),
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ],
                check=True,
                capture_output=True,
            )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.cert}"
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            decode_responses=True,
            socket_timeout=5,
            ssl=self.tls,
            ssl_ca_certs=str(self.cert) if self.tls else None,
        )

    def start(self, timeout: float = 15.0) -> None:
        port = (
            [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.cert),
                "--tls-key-file",
                str(self.dir / "key.pem"),
                "--tls-ca-cert-file",
                str(self.cert),
                "--tls-auth-clients",
                "no",
            ]
            if self.tls
            else ["--port", str(self.port)]
        )
        args = [
            self.binary,
            *port,
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
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client().ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"redis-server exited {self.proc.returncode}: {(self.dir / 'redis.log').read_text()[-2000:]}"
                    ) from None
                if time.monotonic() > deadline:
                    raise AssertionError("redis-server did not answer in time") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop it as a crash would (SIGKILL): what the append-only file holds is what survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
