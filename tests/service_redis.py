"""A real ``redis-server`` for the tests, on a free loopback port.

:class:`RedisServer` runs one in a temporary directory, with no persistence
unless asked for (``appendonly=True``), and can stop, kill and restart it on
the same port, so fault tests can take Redis away under a running worker.
The fixtures ``redis_server`` (one server for the session) and ``redis_url``
(a fresh key prefix per test on that server) are imported by conftest.py.
"""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import conftest  # partly initialised while it imports this module: use at call time only
import pytest
from service_process import ServerProcess

HINT = "apt-get install redis-server"


class RedisServer(ServerProcess):
    name = "redis-server"
    poll_interval = 0.02

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = False,
        port: int | None = None,
        unixsocket: bool = False,
    ) -> None:
        super().__init__(port)
        self.binary = conftest.require_binary("redis-server", HINT)
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.socket = self.dir / "redis.sock" if unixsocket else None
        self.log_path = self.dir / "redis.log"  # (written by the server itself)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        if self.socket is not None:
            args += ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        if self.appendonly:
            # fsync every write, so a SIGKILLed server comes back with all of it
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        return args

    def spawn(self) -> subprocess.Popen[bytes]:
        # (stderr: what it says when it exits before it opens its log)
        return subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A URL with a key prefix of its own, so tests never see each other's keys."""
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}"
