"""How late periodic ticks start: one `gatorapp worker` process, `every=1`, 8 s.

    python benchmarks/ticks.py redis://127.0.0.1:6379/15
    python benchmarks/ticks.py sqlite:////tmp/ticks.db

Each tick's task records, as it starts, how long after its tick time that
is. The first tick is left out: a worker finds it already due when it starts
(up to a second old). Timings are never asserted anywhere.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = """
import os, time
from gatorapp import App
app = App(os.environ["TICKS_URL"])

@app.hook
def record(task):
    tick = int(task.task_id.rsplit(":", 1)[1]) / 1000
    with open(os.environ["TICKS_LEDGER"], "a") as f:
        f.write(f"{time.time() - tick}\\n")

@app.periodic(every=1, on_start=record)
def tick():
    return None
"""


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    url = sys.argv[1]
    work = Path(tempfile.mkdtemp(prefix="gatorapp-ticks-"))
    (work / "ticks_app.py").write_text(APP)
    root = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "TICKS_URL": url,
        "TICKS_LEDGER": str(work / "ledger"),
        "PYTHONPATH": os.pathsep.join([str(work), root]),
    }
    cmd = [sys.executable, "-m", "gatorapp", "worker", "-A", "ticks_app", "-l", "ERROR"]
    proc = subprocess.Popen(cmd, env=env)
    time.sleep(8.5)
    proc.terminate()
    proc.wait(30)
    late = sorted(float(x) * 1000 for x in (work / "ledger").read_text().split()[1:])
    print(
        f"{url}: {len(late)} ticks started after their time by "
        f"median {statistics.median(late):.1f} ms, max {max(late):.1f} ms"
    )


if __name__ == "__main__":
    main()
