"""A real PostgreSQL server for the tests, on a free loopback port.

:class:`PostgresServer` makes a cluster with ``initdb`` in a temporary
directory and runs ``postgres`` itself (not ``pg_ctl``), so a fault test can
stop, kill and restart it on the same port, as ``service_redis`` does for
Redis. PostgreSQL refuses to run as root: under root (CI) every command runs
as the ``postgres`` user the Debian package makes. The binaries come from
``$PATH`` or from Debian's ``/usr/lib/postgresql/<version>/bin``.

The fixtures ``postgres_server`` (one server for the session) and
``postgres_url`` (a database of its own per test) are for the PostgreSQL
backend's tests.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import conftest  # partly initialised while it imports this module: use at call time only
import pytest
from service_process import ServerProcess

HINT = "apt-get install postgresql"


def binary(name: str) -> str:
    """A PostgreSQL binary: on $PATH, else the newest of Debian's."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if versions:
        return versions[-1]
    return conftest.require_binary(name, HINT)  # (fails under CI, skips elsewhere)


def _as_postgres() -> Callable[[], None] | None:
    """What makes a child process the ``postgres`` user, when this one is root."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root, and there is no postgres user to run PostgreSQL as")

    def drop() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return drop


class PostgresServer(ServerProcess):
    name = "postgres"
    start_timeout = 30.0
    stop_signal = signal.SIGINT  # a fast shutdown: connections are ended, nothing is lost
    signal_timeout = 30.0

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self.initdb = binary("initdb")
        self.postgres = binary("postgres")
        # (Not pytest's tmp_path: its parents are root's, closed to postgres.)
        self.dir = Path(tempfile.mkdtemp(prefix="gatorapp-pg-"))
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self.preexec_fn = _as_postgres()
        if self.preexec_fn is not None:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self._init()

    @property
    def url(self) -> str:
        return f"postgresql://gatorapp@127.0.0.1:{self.port}/postgres"

    def _init(self) -> None:
        done = subprocess.run(
            [self.initdb, "-D", str(self.data), "-U", "gatorapp", "-A", "trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            preexec_fn=self.preexec_fn,
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")

    def args(self) -> list[str]:
        return [
            self.postgres,
            "-D", str(self.data),
            "-p", str(self.port),
            "-k", str(self.dir),  # (its Unix socket, beside the data)
            "-c", "listen_addresses=127.0.0.1",
            # A killed server keeps what it committed (the OS has it), which
            # is what the fault tests kill it for; a machine crash is not tested.
            "-c", "fsync=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ]  # fmt: skip

    def answers(self) -> bool:
        """Whether it accepts a query (a TCP connect alone comes before that)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; the next start recovers
        from the WAL. Its backends end by themselves when they see it gone:
        wait for them, since a new postmaster refuses to start while they
        hold the old one's shared memory."""
        if self.proc is None or not self.running():
            return
        children = self._children(self.proc.pid)
        super().kill()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
            time.sleep(0.05)

    @staticmethod
    def _children(parent: int) -> list[int]:
        out = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == parent:
                out.append(int(pid))
        return out

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if not os.environ.get("CI"):
        pytest.importorskip("psycopg")  # (under CI: a failure, as for a missing server)
    server = PostgresServer().start()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A database of this test's own on the session's server."""
    import psycopg

    name = f"t{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.url.rsplit("/", 1)[0] + "/" + name
