"""One in-process drain of no-op tasks on memory://, for counting instructions.

Wall-clock rates on a shared machine move by 10-20% from run to run; an
instruction count does not. Run it twice under callgrind with two sizes, and
the difference over the difference in tasks is the instructions per task,
start-up cost excluded::

    for n in 2000 12000; do
        valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
            "$(python3 -c 'import sys; print(sys.executable)')" \\
            benchmarks/drain_once.py $n [--metrics] 2>&1 | grep Collected
    done

(Name the Python binary itself: valgrind does not follow a pyenv shim.)
"""

from __future__ import annotations

import argparse

from gatorapp import App, Worker
from gatorapp.tally import Tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="tasks to drain")
    parser.add_argument("--metrics", action="store_true", help="count for metrics too")
    args = parser.parse_args()
    app = App("memory://", lease=60)

    @app.task(name="bench.noop")
    def noop(x: int) -> None:
        return None

    noop.map(range(args.n))
    Worker(app, burst=True, tally=Tally() if args.metrics else None).run_forever()


if __name__ == "__main__":
    main()
