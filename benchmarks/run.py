"""gatorapp's throughput and latency on one backend, medians of several runs.

    python benchmarks/run.py --backend memory
    python benchmarks/run.py --backend sqlite
    python benchmarks/run.py --backend redis                  # starts its own redis-server
    python benchmarks/run.py --backend redis --url redis://127.0.0.1:6379/15
    python benchmarks/run.py --backend postgres --url postgresql://USER@HOST:5432/DB

Phases (each a no-op task, N tasks, --reps runs; the median and the spread):

  enqueue   N calls of .delay(), one at a time
  bulk      one .map() of N tasks
  drain     a burst Worker in this process, -c 1, on N queued tasks: the
            worker's own cost per task (memory:// is the backend-free case)
  drain-c4  the same with -c 4 (threads)
  procs     sqlite, redis and postgres: `gatorapp worker -p P --burst` as a real process
            tree, for P = 1 and 2, timed from the first task to leave the queue
            to the last one settled (start-up excluded)
  latency   redis: an idle `gatorapp worker` process; enqueue one task, wait
            for it to run (it pushes to a Redis list), 300 times: p50 and p99
  results   drain -c 1 with results off and on (App(results=True): every
            task stores its return value), alternating, and the ratio; then
            an idle `gatorapp worker` process with results on: enqueue one
            task, get() its result, 300 times: how long after the task
            returned get() did (p50, p99)
  metrics   drain -c 1 with metrics off and on (a Tally: what
            `gatorapp worker --metrics-port` counts per task), alternating,
            and the ratio; on sqlite and redis then `gatorapp worker -p P
            --burst` without and with --metrics-port, for P = 1 and 2 (the
            whole command: counting, the -p 2 processes writing their counts
            once a second, the idle endpoint; nothing scrapes it)
  asyncio   an async def no-op drained by a burst Worker in this process
            (its event loop), alternating with the sync no-op drain; then
            await .adelay() one at a time against .delay() one at a time,
            alternating, and the ratios; on redis, a bare PING on a blocking
            socket and through an event loop's own Protocol (what the loop
            costs a round trip before any gatorapp code), and, with uvloop
            installed, .adelay() on uvloop
  ceiling   redis: a bare Python loop over the same payloads (one script
            reserving 200, msgpack decode, a dict lookup, the call, one
            script deleting the batch): what the round trips and Python
            cost with no bookkeeping at all, for comparison

The first lines describe the machine. Timings are never asserted anywhere;
compare ratios measured in one run. For gatorapp side by side with Celery,
RQ, Dramatiq, Huey, arq and taskiq, see docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgpack

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import gatorapp  # noqa: E402
from gatorapp import App, Worker  # noqa: E402
from gatorapp.tally import Tally  # noqa: E402

QUEUE = "bench"

APP_SOURCE = """
import os
from gatorapp import App
app = App(os.environ["BENCH_URL"], default_queue="bench", lease=60,
          results=bool(os.environ.get("BENCH_RESULTS")))
_done = {}

@app.task(name="bench.stamp")
def stamp(x):
    import time
    return time.time()

@app.task(name="bench.noop")
def noop(x):
    return None

@app.task(name="bench.ping")
def ping(x):
    import redis
    client = _done.get(os.getpid())
    if client is None:
        client = _done[os.getpid()] = redis.Redis.from_url(os.environ["BENCH_URL"])
    client.rpush("bench:done", x)
"""


# -- the machine ---------------------------------------------------------------------
def describe(url: str) -> list[str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [
        f"machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"python: {platform.python_implementation()} {platform.python_version()}",
        f"gatorapp: {gatorapp.__version__} ({commit()}), msgpack {msgpack.version}",
    ]
    if url.startswith("redis"):
        import redis

        info = redis.Redis.from_url(url).info("server")
        lines.append(f"redis-server {info['redis_version']}, redis-py {redis.__version__}")
    if url.startswith("sqlite"):
        import sqlite3

        lines.append(f"sqlite {sqlite3.sqlite_version}")
    if url.startswith("postgres"):
        lines.append(postgres_state(url))
    return lines


def postgres_state(url: str) -> str:
    """The server's version, and the tasks table's rows (dead ones are what
    vacuum has not reclaimed yet: later runs against many are slower)."""
    import psycopg

    from gatorapp.backends.postgres import parse_url

    with psycopg.connect(parse_url(url)[0], autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        rows = conn.execute(
            "SELECT n_live_tup, n_dead_tup, pg_total_relation_size(relid) FROM "
            "pg_stat_user_tables WHERE relname = 'gatorapp_tasks'"
        ).fetchone()
    state = (
        f"; gatorapp_tasks: {rows[0]} live, {rows[1]} dead rows, {rows[2] // 2**20} MiB"
        if rows
        else ""
    )
    return f"PostgreSQL {version[0] if version else '?'}, psycopg {psycopg.__version__}{state}"


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "?"
    except OSError:
        return "?"


# -- a redis-server of our own ---------------------------------------------------------
def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed; give --url redis://HOST:PORT/DB instead")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- phases ------------------------------------------------------------------------------
#: What --phases may name (procs: memory has none; latency and ceiling: Redis only).
PHASES = (
    "enqueue",
    "bulk",
    "drain",
    "drain-c4",
    "procs",
    "latency",
    "results",
    "metrics",
    "asyncio",
    "ceiling",
)


def make_app(url: str, results: bool = False) -> tuple[App, Callable[..., object]]:
    app = App(url, default_queue=QUEUE, lease=60, results=results)

    @app.task(name="bench.noop")
    def noop(x: int) -> None:
        return None

    return app, noop


def make_async_app(url: str) -> tuple[App, Callable[..., object]]:
    app = App(url, default_queue=QUEUE, lease=60)

    @app.task(name="bench.anoop")
    async def anoop(x: int) -> None:
        return None

    return app, anoop


def phase_async_drain(url: str, n: int) -> float:
    app, anoop = make_async_app(url)
    fill(app, anoop, n)
    worker = Worker(app, queues=[QUEUE], burst=True)
    seconds = timed(worker.run_forever)
    assert worker.tasks_complete == n, worker.tasks_complete
    app.close()
    return n / seconds


def run_on(loop: str, coro: Coroutine[Any, Any, float]) -> float:
    """Run ``coro`` on a new event loop: asyncio's own, or uvloop's."""
    if loop == "uvloop":
        import uvloop

        seconds: float = uvloop.run(coro)
        return seconds
    import asyncio

    return asyncio.run(coro)


def phase_adelay(url: str, n: int, loop: str = "asyncio") -> float:
    app, anoop = make_async_app(url)
    app.backend.drop_all(QUEUE)

    async def run() -> float:
        adelay = anoop.adelay  # type: ignore[attr-defined]
        for i in range(200):
            await adelay(i)
        t0 = time.perf_counter()
        for i in range(n):
            await adelay(i)
        return time.perf_counter() - t0

    seconds = run_on(loop, run())
    app.close()
    return n / seconds


PING = b"*1\r\n$4\r\nPING\r\n"


def has_uvloop() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def phase_ping(url: str, n: int, loop: str) -> float:
    """Round trips per second of a bare PING, no gatorapp code at all: on a
    blocking socket (``loop="blocking"``) or through an event loop's own
    Protocol. The difference is what a loop costs per round trip."""
    import asyncio
    from urllib.parse import urlsplit

    where = urlsplit(url)
    addr = (where.hostname or "127.0.0.1", where.port or 6379)
    if loop == "blocking":
        sock = socket.create_connection(addr)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        for _ in range(n):
            sock.sendall(PING)
            sock.recv(64)
        seconds = time.perf_counter() - t0
        sock.close()
        return n / seconds

    class Ping(asyncio.Protocol):
        waiter: asyncio.Future[None]

        def data_received(self, data: bytes) -> None:
            self.waiter.set_result(None)

    async def run() -> float:
        running = asyncio.get_running_loop()
        transport, proto = await running.create_connection(Ping, *addr)
        t0 = time.perf_counter()
        for _ in range(n):
            proto.waiter = running.create_future()
            transport.write(PING)
            await proto.waiter
        seconds = time.perf_counter() - t0
        transport.close()
        return seconds

    return n / run_on(loop, run())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def child_path(workdir: Path) -> str:
    """PYTHONPATH of a worker process: the bench app, and this checkout's
    gatorapp (not whichever one is installed) as this process imports it."""
    return os.pathsep.join([str(workdir), str(ROOT)])


def fill(app: App, noop: object, n: int) -> None:
    app.backend.drop_all(QUEUE)
    for start in range(0, n, 10_000):
        noop.map(range(start, min(n, start + 10_000)))  # type: ignore[attr-defined]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def phase_enqueue(url: str, n: int) -> float:
    app, noop = make_app(url)
    app.backend.drop_all(QUEUE)
    delay = noop.delay  # type: ignore[attr-defined]
    for i in range(200):
        delay(i)
    seconds = timed(lambda: [delay(i) for i in range(n)])
    app.close()
    return n / seconds


def phase_bulk(url: str, n: int) -> float:
    app, noop = make_app(url)
    app.backend.drop_all(QUEUE)
    noop.map(range(200))  # type: ignore[attr-defined]
    app.backend.drop_all(QUEUE)
    seconds = timed(lambda: noop.map(range(n)))  # type: ignore[attr-defined]
    app.close()
    return n / seconds


def phase_drain(
    url: str, n: int, concurrency: int, results: bool = False, metrics: bool = False
) -> float:
    app, noop = make_app(url, results)
    fill(app, noop, n)
    # (metrics on: what `gatorapp worker --metrics-port` counts per task; the
    # scrape itself happens on another thread, when Prometheus asks)
    tally = Tally() if metrics else None
    worker = Worker(app, queues=[QUEUE], burst=True, concurrency=concurrency, tally=tally)
    seconds = timed(worker.run_forever)
    assert worker.tasks_complete == n, worker.tasks_complete
    app.close()
    return n / seconds


def phase_procs(url: str, n: int, processes: int, workdir: Path, metrics: bool = False) -> float:
    app, noop = make_app(url)
    fill(app, noop, n)
    env = {**os.environ, "BENCH_URL": url, "PYTHONPATH": child_path(workdir)}
    cmd = [
        sys.executable,
        "-m",
        "gatorapp",
        "worker",
        "-A",
        "bench_app",
        "-Q",
        QUEUE,
        "-p",
        str(processes),
        "--burst",
        "-l",
        "WARNING",
    ]
    if metrics:
        cmd += ["--metrics-port", str(free_port())]
    proc = subprocess.Popen(cmd, env=env, cwd=workdir)
    backend = app.backend
    first = last = None
    while True:
        s = backend.stats(QUEUE)
        now = time.perf_counter()
        if first is None and s.ready < n:
            first = now
        if s.ready + s.running + s.delayed == 0:
            last = now
            break
        if proc.poll() is not None and s.ready + s.running:
            raise RuntimeError(f"workers exited with {proc.returncode} and tasks left")
        time.sleep(0.005)
    proc.wait(60)
    app.close()
    return n / (last - (first or last))


def phase_latency(url: str, rounds: int, workdir: Path) -> tuple[float, float]:
    import redis

    app = App(url, default_queue=QUEUE, lease=60)

    @app.task(name="bench.ping")
    def ping(x: int) -> None: ...

    client = redis.Redis.from_url(url)
    client.delete("bench:done")
    env = {**os.environ, "BENCH_URL": url, "PYTHONPATH": child_path(workdir)}
    cmd = [
        sys.executable,
        "-m",
        "gatorapp",
        "worker",
        "-A",
        "bench_app",
        "-Q",
        QUEUE,
        "-l",
        "ERROR",  # (its stop at the end logs a WARNING)
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=workdir)
    try:
        for _ in range(5):  # warm-up, and the worker's start
            ping.delay(-1)
            client.blpop("bench:done", 30)
        samples = []
        for i in range(rounds):
            t0 = time.perf_counter()
            ping.delay(i)
            client.blpop("bench:done", 30)
            samples.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.001)  # the worker goes idle between tasks
    finally:
        proc.terminate()
        proc.wait(30)
        app.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def phase_get(url: str, rounds: int, workdir: Path) -> tuple[float, float]:
    """ms from a task's return (its own clock) to get() returning its value."""
    app = App(url, default_queue=QUEUE, lease=60, results=True)

    @app.task(name="bench.stamp")
    def stamp(x: int) -> float: ...

    env = {**os.environ, "BENCH_URL": url, "BENCH_RESULTS": "1", "PYTHONPATH": child_path(workdir)}
    cmd = [sys.executable, "-m", "gatorapp", "worker", "-A", "bench_app", "-Q", QUEUE]
    proc = subprocess.Popen([*cmd, "-l", "ERROR"], env=env, cwd=workdir)
    try:
        for _ in range(5):  # warm-up, and the worker's start
            stamp.delay(-1).get(timeout=30)
        samples = []
        for i in range(rounds):
            handle = stamp.delay(i)
            returned_at = handle.get(timeout=30)
            samples.append((time.time() - returned_at) * 1000)
            time.sleep(0.001)
    finally:
        proc.terminate()
        proc.wait(30)
        app.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def phase_ceiling(url: str, n: int) -> float:
    """A bare loop: no leases, records, outbox or envelope checks."""
    import redis

    client = redis.Redis.from_url(url)
    client.delete("ceiling:ready", "ceiling:data")
    envelopes = [
        msgpack.packb(
            {
                "v": 1,
                "id": f"{i:032x}",
                "name": "bench.noop",
                "queue": QUEUE,
                "args": [i],
                "kwargs": {},
                "retries": 0,
                "attempt": 0,
            }
        )
        for i in range(n)
    ]
    for start in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        ids = [f"{i:032x}" for i in range(start, min(n, start + 1000))]
        pipe.hset("ceiling:data", mapping=dict(zip(ids, envelopes[start : start + 1000])))
        pipe.rpush("ceiling:ready", *ids)
        pipe.execute()
    take = client.register_script(
        "local ids = redis.call('LPOP', KEYS[1], ARGV[1]) if not ids then return {} end "
        "return {ids, redis.call('HMGET', KEYS[2], unpack(ids))}"
    )
    delete = client.register_script(
        "redis.call('HDEL', KEYS[1], unpack(cmsgpack.unpack(ARGV[1]))) return 1"
    )
    tasks = {"bench.noop": lambda x: None}
    t0 = time.perf_counter()
    done = 0
    while True:
        got = take(keys=["ceiling:ready", "ceiling:data"], args=[200])
        if not got:
            break
        ids, datas = got
        for data in datas:
            env = msgpack.unpackb(data)
            tasks[env["name"]](*env["args"], **env["kwargs"])
        delete(keys=["ceiling:data"], args=[msgpack.packb(ids, use_bin_type=False)])
        done += len(ids)
    return done / (time.perf_counter() - t0)


# -- running -------------------------------------------------------------------------------
def median_of(label: str, runs: list[float], unit: str = "tasks/s") -> None:
    med = statistics.median(runs)
    spread = (max(runs) - min(runs)) / 2 / med * 100 if med else 0.0
    value = f"{med:>12.2f}" if unit == "ms" else f"{med:>12,.0f}"
    print(f"  {label:<28} {value} {unit}  (±{spread:.0f}% over {len(runs)} runs)", flush=True)


def ratios(label: str, off: list[float], on: list[float]) -> None:
    """The ratio of the medians, and the median of each pair's ratio (the runs
    alternate: a pair shares the machine's mood of the moment)."""
    of_medians = statistics.median(on) / statistics.median(off)
    of_pairs = statistics.median(b / a for a, b in zip(off, on))
    print(f"  {label:<28} {of_medians:>12.2f}  (pair by pair: {of_pairs:.2f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", choices=["memory", "sqlite", "redis", "postgres"], default="memory"
    )
    parser.add_argument("--url", help="the backend URL (default: a temporary one)")
    parser.add_argument("--n", type=int, default=20_000, help="tasks per run")
    parser.add_argument("--reps", type=int, default=5, help="runs per phase")
    parser.add_argument(
        "--phases", default="all", help=f"comma-separated of {', '.join(PHASES)}; default: all"
    )
    parser.add_argument(
        "--signed",
        action="store_true",
        help="sign every task (sets GATORAPP_SIGNING_KEY for this run and its workers)",
    )
    args = parser.parse_args()
    if args.signed:
        os.environ["GATORAPP_SIGNING_KEY"] = "bench-" + "k" * 32

    workdir = Path(tempfile.mkdtemp(prefix="gatorapp-bench-"))
    (workdir / "bench_app.py").write_text(textwrap.dedent(APP_SOURCE))
    server = None
    url = args.url
    if url is None:
        if args.backend == "memory":
            url = "memory://"
        elif args.backend == "sqlite":
            url = f"sqlite:///{workdir}/bench.db"
        elif args.backend == "postgres":
            parser.error("--backend postgres needs --url postgresql://USER@HOST:PORT/DB")
        else:
            server, url = start_redis(workdir)
    wanted = set(args.phases.split(",")) if args.phases != "all" else None
    unknown = sorted((wanted or set()) - set(PHASES))
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; known: {', '.join(PHASES)}")

    def on(name: str) -> bool:
        return wanted is None or name in wanted

    try:
        for line in describe(url):
            print(line)
        print(f"backend: {url}   N={args.n}   reps={args.reps}   signed={args.signed}")
        reps, n = args.reps, args.n
        if on("enqueue"):
            median_of(".delay() one at a time", [phase_enqueue(url, n // 4) for _ in range(reps)])
        if on("bulk"):
            median_of(".map() bulk", [phase_bulk(url, n) for _ in range(reps)])
        if on("drain"):
            median_of("drain, worker -c 1", [phase_drain(url, n, 1) for _ in range(reps)])
        if on("drain-c4"):
            median_of("drain, worker -c 4", [phase_drain(url, n, 4) for _ in range(reps)])
        if args.backend != "memory" and on("procs"):
            for p in (1, 2):
                runs = [phase_procs(url, n, p, workdir) for _ in range(reps)]
                median_of(f"drain, gatorapp worker -p {p}", runs)
        if args.backend == "redis" and on("latency"):
            pairs = [phase_latency(url, 300, workdir) for _ in range(reps)]
            median_of("latency p50", [p[0] for p in pairs], "ms")
            median_of("latency p99", [p[1] for p in pairs], "ms")
        if on("results"):
            off: list[float] = []
            on_: list[float] = []
            for _ in range(reps):  # alternating, so drift hits both alike
                off.append(phase_drain(url, n, 1))
                on_.append(phase_drain(url, n, 1, results=True))
            median_of("drain -c 1, results off", off)
            median_of("drain -c 1, results on", on_)
            ratio = statistics.median(on_) / statistics.median(off)
            print(f"  {'results on / off':<28} {ratio:>12.2f}", flush=True)
            if args.backend != "memory":
                pairs = [phase_get(url, 300, workdir) for _ in range(reps)]
                median_of("get() after return, p50", [p[0] for p in pairs], "ms")
                median_of("get() after return, p99", [p[1] for p in pairs], "ms")
        if on("metrics"):
            off, on_ = [], []
            for _ in range(reps):  # alternating, so drift hits both alike
                off.append(phase_drain(url, n, 1))
                on_.append(phase_drain(url, n, 1, metrics=True))
            median_of("drain -c 1, metrics off", off)
            median_of("drain -c 1, metrics on", on_)
            ratios("metrics on / off", off, on_)
            if args.backend != "memory":
                for p in (1, 2):  # the whole command: counting, writing, serving
                    off, on_ = [], []
                    for _ in range(reps):
                        off.append(phase_procs(url, n, p, workdir))
                        on_.append(phase_procs(url, n, p, workdir, metrics=True))
                    median_of(f"gatorapp worker -p {p}", off)
                    median_of("  --metrics-port", on_)
                    ratios("  on / off", off, on_)
        if on("asyncio"):
            sync_runs: list[float] = []
            async_runs: list[float] = []
            for _ in range(reps):
                sync_runs.append(phase_drain(url, n, 1))
                async_runs.append(phase_async_drain(url, n))
            median_of("drain -c 1, def no-op", sync_runs)
            median_of("drain, async def no-op", async_runs)
            ratio = statistics.median(async_runs) / statistics.median(sync_runs)
            print(f"  {'async / sync drain':<28} {ratio:>12.2f}", flush=True)
            delays: list[float] = []
            adelays: list[float] = []
            uv_adelays: list[float] = []
            for _ in range(reps):
                delays.append(phase_enqueue(url, n // 4))
                adelays.append(phase_adelay(url, n // 4))
                if has_uvloop():
                    uv_adelays.append(phase_adelay(url, n // 4, "uvloop"))
            median_of(".delay() one at a time", delays)
            median_of("await .adelay() one at a time", adelays)
            ratio = statistics.median(adelays) / statistics.median(delays)
            print(f"  {'adelay / delay':<28} {ratio:>12.2f}", flush=True)
            if uv_adelays:
                median_of("await .adelay(), uvloop", uv_adelays)
                ratio = statistics.median(uv_adelays) / statistics.median(delays)
                print(f"  {'adelay (uvloop) / delay':<28} {ratio:>12.2f}", flush=True)
            if args.backend == "redis":
                # What an event loop costs a round trip, before any gatorapp code.
                loops = ["blocking", "asyncio"] + (["uvloop"] if has_uvloop() else [])
                pings: dict[str, list[float]] = {k: [] for k in loops}
                for _ in range(reps):
                    for k in loops:
                        pings[k].append(phase_ping(url, n // 4, k))
                for k in loops:
                    median_of(f"bare PING, {k}", pings[k])
        if args.backend == "redis" and on("ceiling"):
            median_of("ceiling: a bare loop", [phase_ceiling(url, n) for _ in range(reps)])
        if url.startswith("postgres"):
            print("after: " + postgres_state(url))
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
