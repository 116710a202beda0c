"""Every example under examples/ runs end to end.

Each test copies one example to a temporary folder, enqueues with the
example's own producer script, runs a real ``gatorapp worker --burst`` process
on the default SQLite file there, and checks what the tasks did.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LEFTOVERS = shutil.ignore_patterns(
    "__pycache__",
    ".pytest_cache",
    "*.db",
    "*.db-*",
    "outbox",
    "imported",
    "digests",
    "receipts",
    "done.log",
    "*.hits",
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GATORAPP_URL", "GATORAPP_APP")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout}"
        f"\n--- stderr\n{proc.stderr}"
    )
    return proc


def python(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(cwd, sys.executable, *args)


def gatorapp(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(cwd, sys.executable, "-m", "gatorapp", *args)


def copy_example(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(EXAMPLES / name, dest, ignore=LEFTOVERS)
    return dest


def assert_unchanged(name: str, proj: Path) -> None:
    """Running the example changed none of its own files (only what it makes)."""
    for original in (EXAMPLES / name).rglob("*"):
        if original.is_file() and "__pycache__" not in original.parts:
            copy = proj / original.relative_to(EXAMPLES / name)
            assert copy.read_bytes() == original.read_bytes(), copy


def status(cwd: Path, app: str) -> dict[str, list[int]]:
    """``gatorapp status`` as {queue: [ready, delayed, running, dead]} (its
    last column, how long the oldest ready task waited, left out)."""
    lines = gatorapp(cwd, "status", "-A", app).stdout.splitlines()[1:]
    return {q: [int(n) for n in rest[:4]] for q, *rest in (line.split() for line in lines)}


def test_every_example_has_a_readme_and_a_test():
    names = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir() and p.name[0] not in "._")
    assert names == sorted(
        [
            "async_web",
            "custom_backend",
            "feeds",
            "leasing_backend",
            "logging_worker",
            "queues",
            "skinny_task",
            "tutorial",
        ]
    )
    for name in names:
        assert (EXAMPLES / name / "README.md").is_file(), name
        assert f"def test_{name}" in Path(__file__).read_text(), name


def test_tutorial(tmp_path):
    proj = copy_example("tutorial", tmp_path)
    out = python(proj, "enqueue.py").stdout
    assert "queued 3 welcome emails" in out
    assert status(proj, "tasks") == {"default": [1, 0, 0, 0], "emails": [3, 1, 0, 0]}

    log = gatorapp(proj, "worker", "-A", "tasks.app", "--burst").stderr
    assert "stopped: 4 tasks done" in log
    assert sorted(p.name for p in (proj / "outbox").iterdir()) == [
        "welcome-1.txt",
        "welcome-2.txt",
        "welcome-3.txt",
    ]
    # The task delayed by 60 s is still waiting.
    assert status(proj, "tasks") == {"default": [0, 0, 0, 0], "emails": [0, 1, 0, 0]}

    # The tutorial's own tests: memory:// with app.drain(), and eager mode.
    out = python(proj, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_tasks.py").stdout
    assert "6 passed" in out


def test_feeds(tmp_path):
    proj = copy_example("feeds", tmp_path)
    python(proj, "enqueue.py")

    # python.xml answers 503 once: the on_error hook grants a retry, due 0.5 s later.
    # missing.xml answers 404: no retry, straight to the dead letters.
    log = gatorapp(proj, "worker", "-A", "feeds", "--burst").stderr
    assert "Starting to import feeds via task" in log
    assert "Importing feed url http://feeds.example/python.xml failed; retrying." in log
    assert status(proj, "feeds") == {"default": [0, 1, 0, 1]}
    assert not (proj / "imported").exists()

    time.sleep(0.6)
    log = gatorapp(proj, "worker", "-A", "feeds", "--burst").stderr
    assert "Finished importing 2 feeds via task" in log
    assert sorted(p.name for p in (proj / "imported").iterdir()) == ["python.xml", "rust.xml"]
    counted = python(proj, "-c", "import cache; print(cache.get('feeds_imported'))").stdout
    assert counted.strip() == "2"

    dead = gatorapp(proj, "dead", "-A", "feeds", "ls").stdout
    assert "retries_exhausted" in dead
    assert "FeedNotFound: http://feeds.example/missing.xml" in dead
    assert_unchanged("feeds", proj)


def test_skinny_task(tmp_path):
    proj = copy_example("skinny_task", tmp_path)
    table = python(proj, "measure.py").stdout
    rows = {line[:22].strip(): line[22:].split() for line in table.splitlines()[1:]}
    plain, skinny, _ = rows["digest, 50 articles"]
    assert int(skinny) < int(plain) / 5
    plain, skinny, _ = rows["add(2, 3)"]
    assert skinny == plain  # too small to gain: sent uncompressed

    python(proj, "enqueue.py")
    with sqlite3.connect(proj / "gatorapp.db") as db:
        stored = [bytes(r[0]) for r in db.execute("SELECT data FROM gatorapp_tasks")]
    assert len(stored) == 2
    assert all(data[:1] == b"Z" for data in stored)  # compressed in the queue

    # The worker gets the task class from the app: no extra script.
    gatorapp(proj, "worker", "-A", "tasks", "--burst")
    digest = (proj / "digests" / "ada@example.com.txt").read_text().splitlines()
    assert digest[0] == "To: ada@example.com"
    assert len(digest) == 2 + 50
    assert (proj / "digests" / "bob@example.com.txt").exists()
    assert status(proj, "tasks") == {"default": [0, 0, 0, 0]}


def test_queues(tmp_path):
    proj = copy_example("queues", tmp_path)
    python(proj, "enqueue.py", "5", "5")

    # -Q order is priority order: every email before any thumbnail, although
    # the thumbnails were queued first.
    gatorapp(proj, "worker", "-A", "tasks", "-Q", "emails,thumbnails", "--burst")
    kinds = [line.split()[0] for line in (proj / "done.log").read_text().splitlines()]
    assert kinds == ["email"] * 5 + ["thumbnail"] * 5

    # Several workers on one queue: each email is sent exactly once.
    (proj / "done.log").unlink()
    python(proj, "enqueue.py", "40", "3")
    cmd = [sys.executable, "-m", "gatorapp", "worker", "-A", "tasks", "-Q", "emails"]
    cmd += ["--burst", "--prefetch", "0"]
    workers = [
        subprocess.Popen(cmd, cwd=proj, env=_env(), stderr=subprocess.DEVNULL) for _ in range(3)
    ]
    assert [w.wait(timeout=60) for w in workers] == [0, 0, 0]
    lines = (proj / "done.log").read_text().splitlines()
    sent = sorted(line.split()[1] for line in lines)
    assert sent == sorted(str(i) for i in range(40))
    assert len({line.split()[2] for line in lines}) > 1  # the workers shared them
    # The email workers left the thumbnails alone.
    assert status(proj, "tasks")["thumbnails"] == [3, 0, 0, 0]
    assert_unchanged("queues", proj)


def test_custom_backend(tmp_path):
    proj = copy_example("custom_backend", tmp_path)
    out = python(proj, "enqueue.py").stdout
    assert "3 task(s) waiting" in out

    log = gatorapp(proj, "worker", "-A", "tasks", "--burst").stderr
    assert "to dead letters (retries_exhausted) after 2 attempt(s)" in log
    assert sorted(p.name for p in (proj / "receipts").iterdir()) == ["A-1.txt", "A-2.txt"]
    # The dead letter sits in the client's own store, in the "default.dead" table.
    dead = gatorapp(proj, "dead", "-A", "tasks", "ls").stdout
    assert "ValueError: order A-3: nothing to charge" in dead
    with sqlite3.connect(proj / "myapp_queue.db") as db:
        assert db.execute('SELECT COUNT(*) FROM "default"').fetchone() == (0,)
        assert db.execute('SELECT COUNT(*) FROM "default.dead"').fetchone() == (1,)


def test_leasing_backend(tmp_path):
    proj = copy_example("leasing_backend", tmp_path)
    out = python(proj, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_dict_backend.py")
    summary = out.stdout.strip().splitlines()[-1]
    # The whole contract suite runs: what DictBackend lacks is skipped, nothing fails.
    assert " passed" in summary and "failed" not in summary and "error" not in summary, out.stdout
    assert int(summary.split(" passed")[0].split()[-1]) >= 50, summary


def test_logging_worker(tmp_path):
    proj = copy_example("logging_worker", tmp_path)
    python(proj, "enqueue.py")
    log = gatorapp(
        proj, "worker", "-A", "tasks", "--worker-class", "logworkers:LoggingWorker", "--burst"
    ).stderr
    assert "myapp.worker: gatorapp-worker[" in log
    assert 'starting & consuming "default".' in log
    assert "will never die." in log
    assert "got result 9." in log
    assert "got result 2." in log
    assert 'for "default" shutting down. Consumed 2 tasks.' in log


def test_async_web(tmp_path):
    import socket

    import httpx

    proj = copy_example("async_web", tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "web:web", "--port", str(port)],
        cwd=proj,
        env=_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "gatorapp", "worker", "-A", "tasks"],
        cwd=proj,
        env=_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/tasks/none", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.1)
        reply = httpx.post(f"{base}/count", json={"text": "three short words"}, timeout=10)
        assert reply.status_code == 202
        ids = reply.json()
        got = httpx.get(f"{base}/tasks/{ids['id']}", params={"wait": 20}, timeout=30).json()
        assert got == {"status": "succeeded", "value": 3}
        loud = httpx.get(f"{base}/tasks/{ids['shout_id']}", params={"wait": 20}, timeout=30)
        assert loud.json() == {"status": "succeeded", "value": "THREE SHORT WORDS"}
        # An id nobody enqueued: no wait, and an honest status.
        assert httpx.get(f"{base}/tasks/nope", timeout=10).json() == {"status": "unknown"}
    finally:
        for proc in (server, worker):
            proc.terminate()
            proc.wait(30)
        out.close()
    assert worker.returncode == 0, (tmp_path / "server.log").read_text()
    assert_unchanged("async_web", proj)
