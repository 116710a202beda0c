"""Redis-specific behaviour beyond the shared contract suite (tests/test_contract.py).

URL handling, key layout (prefix, one hash slot per queue), idempotence of
scripts when redis-py retries a command whose reply was lost, wake-up
latency of an idle worker, reconnecting after a server restart, and the CLI.
"""

from __future__ import annotations

import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot
from service_redis import RedisServer
from worker_proc import env_for, report, wait_for

from gatorapp import App, Worker
from gatorapp.backends import Message, load_backend
from gatorapp.backends.redis import RedisBackend
from gatorapp.envelope import Task
from gatorapp.errors import BackendError, ConfigurationError


def _queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


# -- URLs and configuration ----------------------------------------------------
@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to resolve or connect, from here to the test's end."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network I/O while building a backend")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


BAD_URLS = [
    ("redis://127.0.0.1:6379/0?bogus=1", "unknown option 'bogus'"),
    ("redis://127.0.0.1:6379/zero", "database number"),
    ("redis://127.0.0.1:6379/0?socket_timeout=soon", "socket_timeout"),
    ("redis://127.0.0.1:notaport/0", "port"),
    ("redis://127.0.0.1/0?prefix=has{brace}", "prefix"),
    ("redis://127.0.0.1/0?prefix=", "prefix"),
    ("unix://", "no socket"),
    ("unix:///tmp/redis.sock?socket_keepalive=yes", "socket_keepalive"),
    ("redis://127.0.0.1:6379/0?socket_timeout=-1", "socket_timeout must be > 0"),
    ("redis://127.0.0.1:6379/0?socket_timeout=0", "socket_timeout must be > 0"),
    ("redis://127.0.0.1:6379/0?socket_connect_timeout=0", "socket_connect_timeout must be > 0"),
    ("redis://127.0.0.1:6379/0?max_connections=0", "max_connections must be > 0"),
    ("unix:///tmp/redis.sock?db=-1", "db must be >= 0"),
    ("redis://127.0.0.1:6379/0?protocol=9", "protocol"),
    ("rediss://127.0.0.1:6379/0?ssl_cert_reqs=bogus", "bogus"),
    ("redis://127.0.0.1:6379/0?ssl_cert_reqs=none", "rediss://"),
    ("redis://127.0.0.1:6379/0?db=3", "two databases"),
    ("redis://[::1:16392/0", "IPv6"),
]


@pytest.mark.parametrize(("url", "says"), BAD_URLS)
def test_bad_urls_fail_at_once_without_network_io(url: str, says: str, no_network) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(says)):
        RedisBackend(url)
    # An App builds its backend when created, so it refuses the URL there.
    # (Only a URL urlsplit itself refuses is caught before the backend.)
    if "[" not in url:
        with pytest.raises(ConfigurationError, match=re.escape(says)):
            App(url)


def test_scheme_is_case_insensitive_and_same_db_twice_is_fine(no_network) -> None:
    b = load_backend("REDIS://127.0.0.1:1/3?db=3")
    assert b.client.connection_pool.connection_kwargs["db"] == 3
    tls = RedisBackend("Rediss://127.0.0.1:1/0?ssl_cert_reqs=none")
    assert tls.client.connection_pool.connection_class is redis.SSLConnection


def test_url_forms_and_options_build_without_io() -> None:
    # Nothing listens on these: building must not connect.
    b = load_backend("redis://:secret@127.0.0.1:1/3?socket_timeout=2.5&prefix=myapp")
    assert isinstance(b, RedisBackend) and b.prefix == "myapp"
    kwargs = b.client.connection_pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (3, "secret", 2.5)
    assert load_backend("rediss://127.0.0.1:1/0").prefix == "gatorapp"
    unix = load_backend("unix:///tmp/nothing-here.sock?db=2")
    assert unix.client.connection_pool.connection_kwargs["path"] == "/tmp/nothing-here.sock"
    assert RedisBackend("redis://127.0.0.1:1/0", prefix="other").prefix == "other"


def test_unix_socket_url(tmp_path) -> None:
    server = RedisServer(tmp_path / "r", unixsocket=True).start()
    try:
        b = load_backend(f"unix://{server.socket}?db=2&prefix=sock")
        b.enqueue([Message("q", "a", b"1")])
        assert [r.task_id for r in b.reserve(["q"], 5, 30, "w")] == ["a"]
        assert redis.Redis(port=server.port, db=2).exists("{sock:q}:data")
        b.close()
    finally:
        server.close()


def test_unreachable_server_raises_backend_error_promptly() -> None:
    b = load_backend(f"redis://127.0.0.1:{_closed_port()}/0")
    start = time.monotonic()
    with pytest.raises(BackendError):
        b.stats("default")
    assert time.monotonic() - start < 3


def test_tls_url_against_a_plain_text_server_hints_at_tls(redis_server) -> None:
    # The handshake runs on the socket timeout: keep both short.
    b = load_backend(
        f"rediss://127.0.0.1:{redis_server.port}/0?socket_timeout=0.2&socket_connect_timeout=0.2"
    )
    with pytest.raises(BackendError, match="rediss:// speaks TLS"):
        b.stats("q")
    b.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- key layout ------------------------------------------------------------------
def test_all_keys_of_a_queue_share_one_slot_and_carry_the_prefix(redis_server) -> None:
    b = RedisBackend(redis_server.url, prefix=f"slot{uuid.uuid4().hex[:6]}")
    q = _queue()
    b.enqueue([Message(q, f"t{i}", b"x", time.time() + 60 * (i % 2)) for i in range(4)])
    got = b.reserve([q], 2, 30, "w")
    b.bury([(got[0], "boom", "err")])
    b.take(q, "t1")
    keys = [k.decode() for k in b.client.keys("*") if k.decode().startswith("{" + b.prefix)]
    queue_keys = [k for k in keys if not k.endswith("}:queues")]
    assert len(queue_keys) >= 8
    assert all(k.startswith("{" + f"{b.prefix}:{q}" + "}:") for k in queue_keys)
    assert len({key_slot(k.encode()) for k in queue_keys}) == 1
    b.close()


def test_prefixes_keep_apps_apart(redis_server) -> None:
    q = "shared-name"
    one = RedisBackend(redis_server.url, prefix=f"one{uuid.uuid4().hex[:6]}")
    two = RedisBackend(redis_server.url, prefix=f"two{uuid.uuid4().hex[:6]}")
    one.enqueue([Message(q, "a", b"1")])
    assert two.stats(q).ready == 0 and two.known_queues() == []
    assert one.known_queues() == [q]
    one.close()
    two.close()


# The ACL rules docs/redis.md recommends, with the prefix "{prefix}".
ACL_RULES = (
    "on >{password} resetkeys ~{{{prefix}:* ~{{{prefix}}}:* resetchannels "
    "&{{{prefix}}}:result:* -@all +@read +@write +@scripting -script|flush "
    "-script|kill -@dangerous +ping +hello +time +subscribe +unsubscribe +publish"
)


def test_works_as_a_restricted_acl_user_confined_to_its_prefix(redis_server) -> None:
    user, prefix = f"u{uuid.uuid4().hex[:6]}", f"acl{uuid.uuid4().hex[:6]}"
    admin = redis.Redis(port=redis_server.port)
    # The rules go in raw, as an operator would type them.
    rules = ACL_RULES.format(password="s3cret", prefix=prefix).split()
    assert admin.execute_command("ACL", "SETUSER", user, *rules) in (b"OK", "OK", True)
    url = f"redis://{user}:s3cret@127.0.0.1:{redis_server.port}/0?prefix={prefix}"
    b = load_backend(url)
    b.enqueue([Message("q", "a", b"1"), Message("q", "b", b"2", time.time() + 60)])
    got = b.reserve(["q"], 5, 30, "w")
    assert [r.task_id for r in got] == ["a"]
    assert b.bury([(got[0], "boom", "err")]) == [True]
    b.wait(["q"], 0.05)
    assert (b.stats("q").delayed, b.known_queues(), b.dead_purge("q")) == (1, ["q"], 1)
    assert b.take("q", "b") == b"2"
    # Results: a reader waits on its task's channel, the worker publishes.
    timer = threading.Timer(0.3, b.put_results, [[("r", b"done", 60.0)]])
    timer.start()
    assert b.wait_result("r", 10) == b"done"
    timer.join()
    other = load_backend(url.replace(f"prefix={prefix}", "prefix=someone-else"))
    with pytest.raises(BackendError, match="permissions"):
        other.stats("q")
    admin.acl_deluser(user)
    for backend in (b, other):
        backend.close()
    admin.close()


def test_results_that_cannot_be_stored_do_not_fail_the_settle(
    redis_server, caplog: pytest.LogCaptureFixture
) -> None:
    # A user allowed the queues but not the result keys: the tasks ran, so the
    # settle goes through (failing it would run them again) and the lost
    # results are logged.
    user, prefix = f"u{uuid.uuid4().hex[:6]}", f"nr{uuid.uuid4().hex[:6]}"
    admin = redis.Redis(port=redis_server.port)
    rules = f"on >pw resetkeys ~{{{prefix}:* ~{{{prefix}}}:queues +@all".split()
    admin.execute_command("ACL", "SETUSER", user, *rules)
    b = load_backend(f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0?prefix={prefix}")
    b.enqueue([Message("q", "a", b"1"), Message("q", "b", b"2")])
    got = b.reserve(["q"], 1, 30, "w")
    with caplog.at_level("ERROR", logger="gatorapp"):
        settled, more = b.begin_settle_and_reserve(
            got, [], [], ["q"], 1, 30, "w", [("a", b"done", 60.0)]
        )()
    assert settled.acked == [True] and [r.task_id for r in more] == ["b"]
    assert "results of finished tasks not stored" in caplog.text
    assert "can't access" in caplog.text
    b.close()
    admin.acl_deluser(user)
    admin.close()


def test_waiting_for_a_result_leaves_no_count_behind(redis_server) -> None:
    prefix = f"w{uuid.uuid4().hex[:6]}"
    b = RedisBackend(redis_server.url, prefix=prefix)
    client = redis.Redis(port=redis_server.port)
    counter = f"{{{prefix}}}:result-waiters"
    client.set(counter, 1, px=600_000)  # another reader, waiting long
    assert b.wait_result("nothing", 0.1) is None
    # counted in and out again; the other reader's expiry was not cut short
    assert int(client.get(counter)) == 1 and client.pttl(counter) > 500_000
    client.delete(counter)
    assert b.wait_result("nothing", 0.1) is None
    assert client.exists(counter) == 0  # no count of zero left behind
    b.close()
    client.close()


# -- lost replies: redis-py retries the command, the script must not act twice ------
class ReplyDropper:
    """A loopback TCP proxy that, when armed, swallows the server's reply to
    the next command named ``command`` and closes the connection, as a
    network failure would."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.command = b"EVALSHA"
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            state = {"drop": False}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        while data := _recv(client):
            if self.armed.is_set() and self.command in data.upper():
                self.armed.clear()
                state["drop"] = True  # before forwarding: the reply comes after
            server.sendall(data)
        server.close()

    def _down(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        while data := _recv(server):
            if state["drop"]:
                self.dropped += 1
                break
            client.sendall(data)
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)  # a FIN now; close() alone waits for _up
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except OSError:
        return b""


@pytest.fixture
def dropper(redis_server) -> Iterator[tuple[ReplyDropper, RedisBackend]]:
    proxy = ReplyDropper(redis_server.port)
    b = RedisBackend(f"redis://127.0.0.1:{proxy.port}/0", prefix=f"drop{uuid.uuid4().hex[:6]}")
    b.stats("warm-up")  # loads no script we test, but opens the path through the proxy
    yield proxy, b
    b.close()
    proxy.close()


def test_lost_reply_to_enqueue_leaves_one_copy(dropper) -> None:
    proxy, b = dropper
    q = _queue()
    b.enqueue([Message(q, "warm", b"w")])  # the script is loaded: EVALSHA goes through
    proxy.armed.set()
    b.enqueue([Message(q, "once", b"payload")])
    assert proxy.dropped == 1
    got = b.reserve([q], 10, 30, "w")
    assert sorted(r.task_id for r in got) == ["once", "warm"]
    assert b.stats(q).ready == 0
    # The same failure under a plain RPUSH: redis-py's retry stores it twice.
    proxy.command = b"RPUSH"
    proxy.armed.set()
    control = f"{{{b.prefix}}}:control"
    b.client.rpush(control, "task-1")
    assert proxy.dropped == 2
    copies = b.client.llen(control)
    assert copies == 2
    report(f"Redis lost reply to enqueue: 1 copy stored (a plain RPUSH stored {copies})")


def test_lost_reply_to_reserve_returns_the_same_batch(dropper) -> None:
    proxy, b = dropper
    q = _queue()
    b.enqueue([Message(q, f"t{i}", b"x") for i in range(3)])
    b.reserve([_queue()], 1, 30, "w")  # load the script
    proxy.armed.set()
    got = b.reserve([q], 2, 30, "w")
    assert proxy.dropped == 1
    assert [(r.task_id, r.deliveries) for r in got] == [("t0", 1), ("t1", 1)]
    s = b.stats(q)
    assert (s.ready, s.running) == (1, 2)
    assert b.ack(got) == [True, True]


def test_lost_reply_to_take_still_returns_the_payload(dropper) -> None:
    proxy, b = dropper
    q = _queue()
    b.enqueue([Message(q, "a", b"payload-a")])
    b.take(q, "missing")  # load the script
    proxy.armed.set()
    assert b.take(q, "a") == b"payload-a"
    assert proxy.dropped == 1
    assert b.len(q) == 0


@pytest.mark.parametrize("op", ["ack", "retry", "release", "bury"])
def test_lost_reply_to_a_lease_call_is_not_taken_for_a_takeover(dropper, op: str) -> None:
    # The repeat finds the token gone; it must report what the first run did.
    proxy, b = dropper
    q = _queue()
    b.enqueue([Message(q, "warm", b"w"), Message(q, "a", b"x")])
    got = {r.task_id: r for r in b.reserve([q], 2, 30, "w")}
    call = {
        "ack": lambda r: b.ack([r]),
        "retry": lambda r: b.retry([(r, b"again", time.time())]),
        "release": lambda r: b.release([r]),
        "bury": lambda r: b.bury([(r, "boom", "err")]),
    }[op]
    assert call(got["warm"]) == [True]  # the script is loaded: EVALSHA goes through
    proxy.armed.set()
    assert call(got["a"]) == [True]
    assert proxy.dropped == 1
    s = b.stats(q)
    assert (s.ready, s.running, s.dead) == {"ack": (0, 0, 0), "bury": (0, 0, 2)}.get(op, (2, 0, 0))
    # A call from a lease that really was taken over is still refused.
    again = b.reserve([q], 2, 30, "w2")
    assert call(got["a"]) == [False] and b.ack(again) == [True] * len(again)


# -- records of calls do not outlive the calls --------------------------------------
def test_no_keys_are_left_behind_after_a_drain_or_get_and_cancel(redis_server) -> None:
    # A database of its own, so dbsize counts only this test's keys.
    url = f"redis://127.0.0.1:{redis_server.port}/9?prefix=left"
    admin = redis.Redis(port=redis_server.port, db=9)
    admin.flushdb()
    app = App(url, lease=3600)

    @app.task
    def noop(i: int) -> None: ...

    noop.map(range(1000))
    worker = Worker(app, queues=["default"], concurrency=4)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        settled = wait_for(lambda: app.backend.len("default") == 0, 20)
        # Left: the queue registry and the queue's counter, and, while the
        # worker runs, its waiter entry and its record in the list of workers
        # (deleted when it stops: see dbsize below). The worker's next reserve
        # deletes the records of its last calls.
        waiting = {b"{left:default}:waiters", b"{left}:workers"}
        waiting.add(f"{{left}}:worker:{worker.worker_id}".encode())
        drained = wait_for(lambda: len(set(admin.keys("*")) - waiting) == 2, 3)
    finally:
        worker.stop()
        thread.join(10)
    assert settled and drained, sorted(admin.keys("*"))[:10]
    got, cancelled = noop.delay(1), noop.delay(2)
    assert app.get(got.id) is not None and app.cancel(cancelled.id) is not None
    assert admin.dbsize() == 2, sorted(admin.keys("*"))
    # A reserve's batch lives as long as it holds a task; once settled, what is
    # left is the record of the settle call, and a record nobody deletes (its
    # process stopped) lasts the retry window of one call, not a lease.
    noop.delay(3)
    got = app.backend.reserve(["default"], 1, 3600, "w")
    assert len(admin.keys("*:b:*")) == 1
    assert app.backend.ack(got) == [True]
    assert admin.keys("*:b:*") == []
    (record,) = admin.keys("*:rec:*")
    assert 0 < admin.pttl(record) <= app.backend.record_ttl * 1000 < 60_000
    app.close()
    admin.flushdb()
    admin.close()


# -- a task due now goes straight to a waiting worker ---------------------------------
def _wait_in_thread(b: RedisBackend, queue: str, timeout: float) -> tuple[threading.Thread, dict]:
    """wait() in a thread of its own, then that thread's next reserve."""
    out: dict = {}

    def run() -> None:
        b.reserve([queue], 10, 30, "w")  # the thread's look: it finds nothing
        t0 = time.monotonic()
        b.wait([queue], timeout)
        out["waited"] = time.monotonic() - t0
        out["stats"] = b.stats(queue)
        out["got"] = b.reserve([queue], 10, 30, "w")

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_a_task_enqueued_while_a_worker_waits_is_handed_to_it(redis_url: str) -> None:
    b = load_backend(redis_url)
    q = _queue()
    thread, out = _wait_in_thread(b, q, 5.0)
    assert wait_for(lambda: b.client.zcard(f"{{{b.prefix}:{q}}}:waiters") == 1, 5)
    b.enqueue([Message(q, "a", b"payload")])
    thread.join(10)
    assert out["waited"] < 1.0  # woken at once, not at the timeout
    assert out["stats"].running == 1  # leased to it at enqueue, before any reserve
    (r,) = out["got"]
    assert (r.task_id, r.data, r.deliveries) == ("a", b"payload", 1)
    assert b.ack([r]) == [True]
    assert b.stats(q) == type(b.stats(q))()
    b.close()


def test_a_worker_that_stops_waiting_hands_back_what_it_was_handed(redis_url: str) -> None:
    b = load_backend(redis_url)
    q = _queue()
    b.reserve([q], 10, 30, "w")
    b.wait([q], 0.05)  # registered: the next task due now is handed to this thread
    b.enqueue([Message(q, "a", b"x")])
    assert b.stats(q).running == 1
    b.wait([q], 5.0)  # returns at once: it holds a handed task
    b.stop_waiting()  # the worker stops instead of reserving
    s = b.stats(q)
    assert (s.ready, s.running) == (1, 0)
    assert [r.task_id for r in b.reserve([q], 10, 30, "w2")] == ["a"]
    b.close()


def test_a_task_handed_to_a_worker_that_died_waiting_comes_back(redis_url: str) -> None:
    # The worker registered, then vanished (SIGKILL): its waiter entry lives
    # two seconds at most, and a task handed to it in that time comes back
    # when its lease expires.
    dead, alive = load_backend(redis_url), load_backend(redis_url)
    q = _queue()
    dead.reserve([q], 10, 0.5, "dead")  # lease 0.5 s: what a task handed to it gets
    dead.wait([q], 0.05)
    alive.enqueue([Message(q, "a", b"x")])
    assert alive.stats(q).running == 1
    assert alive.reserve([q], 10, 30, "alive") == []
    time.sleep(0.8)
    (r,) = alive.reserve([q], 10, 30, "alive")
    assert (r.task_id, r.deliveries) == ("a", 2)
    assert alive.ack([r]) == [True]
    time.sleep(2.1)  # the dead one's waiter entry is gone: nothing more is handed to it
    alive.enqueue([Message(q, "b", b"y")])
    assert [r.task_id for r in alive.reserve([q], 10, 30, "alive")] == ["b"]
    for b in (dead, alive):
        b.close()


def test_waiting_workers_each_get_a_task(redis_url: str) -> None:
    b = load_backend(redis_url)
    q = _queue()
    waiters = [_wait_in_thread(b, q, 5.0) for _ in range(2)]
    assert wait_for(lambda: b.client.zcard(f"{{{b.prefix}:{q}}}:waiters") == 2, 5)
    b.enqueue([Message(q, "a", b"1")])
    b.enqueue([Message(q, "b", b"2")])
    got = []
    for thread, out in waiters:
        thread.join(10)
        got += [r.task_id for r in out["got"]]
    assert sorted(got) == ["a", "b"]
    b.close()


def _waiters(b: RedisBackend, q: str) -> int:
    return int(b.client.zcard(f"{{{b.prefix}:{q}}}:waiters"))


def test_a_thread_busy_with_one_queue_is_no_waiter_on_another(redis_url: str) -> None:
    # A task handed to a thread that is busy would wait in its inbox, its lease
    # not renewed, while another worker idles: only a thread about to block
    # may be registered, on every queue it consumes or on none.
    b = load_backend(redis_url)
    q1, q2 = _queue(), _queue()
    b.reserve([q1, q2], 10, 30, "w")
    b.wait([q1, q2], 0.05)
    assert _waiters(b, q1) == _waiters(b, q2) == 1
    b.enqueue([Message(q2, "a", b"x")])  # handed to it on q2
    b.wait([q1, q2], 5.0)  # returns at once: it holds a task
    got = b.reserve([q1, q2], 10, 30, "w")
    assert [r.task_id for r in got] == ["a"]
    assert _waiters(b, q1) == _waiters(b, q2) == 0
    # A reserve that finds q1 empty and q2 not leaves no entry on q1 either.
    b.enqueue([Message(q2, "b", b"y")])
    more = b.reserve([q1, q2], 10, 30, "w")
    assert [r.task_id for r in more] == ["b"]
    assert _waiters(b, q1) == 0
    b.enqueue([Message(q1, "c", b"z")])
    assert b.stats(q1).ready == 1  # waiting for a reserve, not in a busy inbox
    assert b.ack(got + more) == [True, True]
    b.close()


def test_a_reserve_never_returns_more_than_its_limit(redis_url: str) -> None:
    b = load_backend(redis_url)
    q1, q2 = _queue(), _queue()
    b.reserve([q1, q2], 10, 30, "w")
    b.wait([q1, q2], 0.05)
    b.enqueue([Message(q1, "a", b"x")])  # handed over on q1
    b.enqueue([Message(q2, "b", b"y")])  # and on q2
    b.wait([q1, q2], 5.0)
    first = b.reserve([q1, q2], 1, 30, "w")
    second = b.reserve([q1, q2], 1, 30, "w")
    assert (len(first), len(second)) == (1, 1)
    assert sorted(r.task_id for r in first + second) == ["a", "b"]
    assert b.ack(first + second) == [True, True]
    b.close()


def test_a_failed_reserve_of_a_later_queue_keeps_what_earlier_ones_leased(
    redis_url: str,
) -> None:
    b = load_backend(redis_url)
    q1, q2 = _queue(), _queue()
    b.enqueue([Message(q1, "a", b"x"), Message(q1, "b", b"y")])
    broken = f"{{{b.prefix}:{q2}}}:wait"
    b.client.set(broken, "not a sorted set")  # q2's reserve fails (WRONGTYPE)
    with pytest.raises(BackendError):
        b.reserve([q1, q2], 10, 30, "w")
    b.client.delete(broken)
    # The thread's next reserve returns what q1 leased, at once and unchanged.
    got = b.reserve([q1, q2], 10, 30, "w")
    assert sorted((r.task_id, r.deliveries) for r in got) == [("a", 1), ("b", 1)]
    assert b.ack(got) == [True, True]
    b.close()


def test_a_worker_on_several_queues_with_max_tasks_stops_and_leaves_no_waiter(
    redis_url: str,
) -> None:
    q1, q2 = _queue(), _queue()
    ran: list[str] = []

    def make() -> tuple[App, dict]:
        app = App(redis_url, lease=5.0)
        tasks = {
            "x": app.task(name="x", queue=q1)(lambda: (ran.append("x"), time.sleep(0.5))),
            "y": app.task(name="y", queue=q2)(lambda: ran.append("y")),
            "z": app.task(name="z", queue=q1)(lambda: ran.append("z")),
        }
        return app, tasks

    producer, tasks = make()
    worker = Worker(make()[0], [q1, q2], max_tasks=2)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    b = producer.backend
    assert isinstance(b, RedisBackend)
    assert wait_for(lambda: _waiters(b, q1) == _waiters(b, q2) == 1, 5)
    tasks["x"].delay()
    time.sleep(0.1)
    tasks["z"].delay()
    tasks["y"].delay()
    thread.join(10)
    assert not thread.is_alive()
    assert len(ran) == 2
    assert _waiters(b, q1) == _waiters(b, q2) == 0
    left = b.stats(q1).ready + b.stats(q2).ready
    assert left == 1 and b.stats(q1).running + b.stats(q2).running == 0
    producer.close()


# -- an idle worker wakes at once ---------------------------------------------------
def test_idle_worker_picks_up_new_and_delayed_tasks_quickly(redis_url: str) -> None:
    app = App(redis_url, lease=5)
    ran: dict[str, float] = {}
    tick = threading.Event()

    @app.task
    def stamp(key: str) -> None:
        ran[key] = time.time()
        tick.set()

    worker = Worker(app, queues=["default"])
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        pickups, lateness = [], []
        time.sleep(0.3)  # the worker is idle in wait()
        for i in range(15):
            tick.clear()
            sent = time.time()
            stamp.delay(f"now-{i}")
            assert tick.wait(5)
            pickups.append(ran[f"now-{i}"] - sent)
            time.sleep(0.05)
        for i in range(8):
            tick.clear()
            due = time.time() + 0.25 + 0.03 * i
            stamp.options(delay_until=due).delay(f"later-{i}")
            assert tick.wait(5)
            lateness.append(ran[f"later-{i}"] - due)
    finally:
        worker.stop()
        thread.join(10)
        app.close()
    ms = [x * 1000 for x in pickups]
    late = [x * 1000 for x in lateness]
    report(
        f"Redis idle worker: new task picked up in median {statistics.median(ms):.1f} ms, "
        f"max {max(ms):.1f} ms; delayed task run late by median "
        f"{statistics.median(late):.1f} ms, max {max(late):.1f} ms, min {min(late):.1f} ms"
    )
    assert statistics.median(ms) < 50
    assert min(late) >= -5  # never early (one clock here)
    assert statistics.median(late) < 100
    # A missed wake-up would show as the worker's 0.5 s wait timeout; a busy
    # machine can stretch any one sample, so the bound on the worst is loose.
    assert max(ms) < 450 and max(late) < 450


def test_idle_worker_survives_its_blocking_connection_being_cut_off(
    redis_url: str, redis_server
) -> None:
    # An idle worker blocks in BLPOP; Redis may drop that connection (a
    # timeout, an operator's CLIENT KILL): the worker must wait afresh, not
    # stop hearing about new tasks.
    app = App(redis_url, lease=5)
    ran = threading.Event()

    @app.task
    def mark() -> None:
        ran.set()

    worker = Worker(app, queues=["default"])
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    admin = redis.Redis(port=redis_server.port)
    try:
        blocked: list[int] = []
        assert wait_for(
            lambda: bool(
                blocked.extend(c["id"] for c in admin.client_list() if c.get("cmd") == "blpop")
                or blocked
            ),
            5,
        )
        for client_id in blocked:
            admin.client_kill_filter(_id=client_id)
        time.sleep(0.1)
        mark.delay()
        assert ran.wait(3)
    finally:
        worker.stop()
        thread.join(10)
        app.close()
        admin.close()


# -- Redis going away ----------------------------------------------------------------
def test_backend_recovers_after_a_restart_with_an_empty_script_cache(tmp_path) -> None:
    server = RedisServer(tmp_path / "r", appendonly=True).start()
    try:
        b = RedisBackend(server.url)
        b.enqueue([Message("q", "a", b"1")])
        server.kill()
        start = time.monotonic()
        with pytest.raises(BackendError):
            b.enqueue([Message("q", "b", b"2")])
        failed_in = time.monotonic() - start
        server.start()
        # The new process has no scripts loaded: redis-py reloads on NOSCRIPT.
        b.enqueue([Message("q", "b", b"2")])
        assert sorted(r.task_id for r in b.reserve(["q"], 5, 30, "w")) == ["a", "b"]
        report(f"Redis down: a call failed after {failed_in * 1000:.0f} ms, then recovered")
        assert failed_in < 3
        b.close()
    finally:
        server.close()


def test_queue_is_registered_again_after_redis_restarts_empty(tmp_path) -> None:
    server = RedisServer(tmp_path / "r").start()  # no persistence
    try:
        b = RedisBackend(server.url)
        b.enqueue([Message("q", "a", b"1")])
        b.dead_add("dq", "d", b"1", "decode_error", "bad")
        server.restart()
        # redis-py reconnects on its own: no error tells the backend of it.
        b.enqueue([Message("q", "b", b"2")])
        b.dead_add("dq", "e", b"1", "decode_error", "bad")
        assert b.known_queues() == ["dq", "q"]
        b.close()
    finally:
        server.close()


def test_async_producers_recover_after_a_restart(tmp_path) -> None:
    # adelay's own connection breaks with the server; the next call makes a
    # new one, loads the scripts again and registers the queue again.
    import asyncio

    server = RedisServer(tmp_path / "r").start()  # no persistence
    try:
        app = App(server.url, results=True)
        backend = app.backend

        @app.task
        async def add(a, b):
            return a + b

        def queued() -> list[list[int]]:
            return [
                Task.deserialize(r.data).func_args for r in backend.reserve(["default"], 5, 30, "w")
            ]

        async def main() -> None:
            await add.adelay(1, 1)
            server.restart()  # an empty server: no scripts, no queues
            await add.adelay(2, 2)
            assert queued() == [[2, 2]] and backend.known_queues() == ["default"]
            h = await add.adelay(3, 3)
            server.kill()
            with pytest.raises(BackendError):  # down: a clear error, promptly
                await add.adelay(3, 3)
            with pytest.raises(BackendError):
                await h.astatus()
            with pytest.raises(BackendError):
                await h.aget(timeout=0.1)
            server.start()
            h = await add.adelay(4, 4)
            assert queued() == [[4, 4]] and backend.known_queues() == ["default"]
            assert await h.astatus() == "running"  # (queued() leased it)
            with pytest.raises(TimeoutError):  # the result client is back, waiting
                await app.result("gone").aget(timeout=0.1)

        asyncio.run(main())
        app.close()
    finally:
        server.close()


# -- CLI -------------------------------------------------------------------------
def test_status_and_dead_commands_on_redis(redis_url: str, tmp_path) -> None:
    app = App(redis_url)

    @app.task(name="redis_ledger.record")
    def record(sleep: float = 0.0, spin: float = 0.0) -> None: ...

    record.delay()
    app.backend.dead_add("default", "dead-1", b"not msgpack", "decode_error", "bad bytes")
    env = env_for(redis_url, tmp_path / "ledger.txt")

    def cli(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "gatorapp", *args, "-A", "redis_ledger"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    status = cli("status").splitlines()
    assert status[1].split()[:5] == ["default", "1", "0", "0", "1"]
    assert "dead-1" in cli("dead", "ls")
    assert "decode_error" in cli("dead", "show", "dead-1")
    assert "purged 1" in cli("dead", "purge", "--yes")
    app.close()


def test_redis_py_is_what_speaks_to_the_server(redis_url: str) -> None:
    b = load_backend(redis_url)
    assert isinstance(b.client, redis.Redis)
    assert b.client.ping()
    b.close()


def test_malformed_entries_written_by_hand_fail_only_themselves(redis_url: str) -> None:
    b = load_backend(redis_url)
    q = _queue()
    tag = f"{{{b.prefix}:{q}}}"
    b.enqueue([Message(q, "good", b"g"), Message(q, "bad", b"b")])
    b.client.hset(f"{tag}:dlv", "bad", "not-a-number")  # a delivery count
    b.client.zadd(f"{tag}:wait", {"ghost": 0})  # waiting, with no payload
    got = b.reserve([q], 10, 1.0, "w")
    assert sorted((r.task_id, r.deliveries) for r in got) == [
        ("bad", 1),
        ("ghost", 1),
        ("good", 1),
    ]
    assert next(r for r in got if r.task_id == "ghost").data == b""  # a decode_error to be
    assert b.extend(got) == [True, True, True]
    time.sleep(1.2)  # the lease expires: the expiry counts a delivery for each
    again = b.reserve([q], 10, 30, "w")
    assert sorted((r.task_id, r.deliveries) for r in again) == [
        ("bad", 2),
        ("ghost", 2),
        ("good", 2),
    ]
    assert b.ack(again) == [True, True, True]
    assert b.stats(q) == type(b.stats(q))()
    b.close()
