"""Enqueue and drain throughput of one backend, median of several runs.

    python benchmarks/throughput.py                      # memory:// and a temp SQLite file
    python benchmarks/throughput.py --url redis://127.0.0.1:6379/0 --n 5000 --reps 5

For each backend it measures, in this process:
  * enqueue, one ``.delay()`` at a time, and in bulk with ``.map()``;
  * drain: a burst ``Worker`` (``-c 1`` and ``-c 4``) running a no-op task;
  * the baseline: a bare loop of ``msgpack.packb`` over the same envelopes,
    so ratios show what the queue adds on top of encoding.
Numbers are tasks per second, the median of ``--reps`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import msgpack

from gatorapp import App, Worker


def timed(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def one_run(url: str, n: int) -> dict[str, float]:
    app = App(url, default_queue="bench")

    @app.task(name="bench.noop")
    def noop(x: int) -> None:
        return None

    app.backend.drop_all("bench")
    envelopes = [
        {
            "v": 1,
            "id": f"{i:032x}",
            "name": "bench.noop",
            "queue": "bench",
            "args": [i],
            "kwargs": {},
            "retries": 0,
            "attempt": 0,
        }
        for i in range(n)
    ]
    out = {
        "baseline: msgpack.packb": timed(lambda: [msgpack.packb(e) for e in envelopes], n),
        "enqueue: .delay() each": timed(lambda: [noop.delay(i) for i in range(n)], n),
        "drain: worker -c 1": timed(lambda: Worker(app, burst=True).run_forever(), n),
        "enqueue: .map() bulk": timed(lambda: noop.map(range(n)), n),
        "drain: worker -c 4": timed(
            lambda: Worker(app, burst=True, concurrency=4).run_forever(), n
        ),
    }
    app.close()
    return out


def bench(url: str, n: int, reps: int) -> dict[str, float]:
    runs = [one_run(url, n) for _ in range(reps)]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", help="backend URL (repeatable)")
    parser.add_argument("--n", type=int, default=5000, help="tasks per run")
    parser.add_argument("--reps", type=int, default=5, help="runs; the median is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        urls = args.url or ["memory://", f"sqlite:///{tmp}/bench.db"]
        for url in urls:
            res = bench(url, args.n, args.reps)
            base = res["baseline: msgpack.packb"]
            print(f"\n{url}  (n={args.n}, median of {args.reps})")
            for key, value in res.items():
                print(f"  {key:<26} {value:>10,.0f} tasks/s   {value / base:>6.3f}x baseline")


if __name__ == "__main__":
    main()
