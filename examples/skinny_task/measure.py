"""Measure the payload size of a task with and without SkinnyTask.

python3 measure.py
"""

from gatorapp import Task

from skinnytask import SkinnyTask
from tasks import sample_articles

CASES = [
    ("add(2, 3)", "tasks.add", [2, 3]),
    ("digest, 1 article", "tasks.send_digest", ["ada@example.com", sample_articles(1)]),
    ("digest, 50 articles", "tasks.send_digest", ["ada@example.com", sample_articles(50)]),
    ("digest, 500 articles", "tasks.send_digest", ["ada@example.com", sample_articles(500)]),
]


TASK_ID = "3f2b8c1e9d7a4e05b6c1f0a2d4e8b7c9"  # a real id is 32 random hex digits


def sizes(name, args):
    plain = Task(name, args, task_id=TASK_ID).serialize()
    skinny = SkinnyTask(name, args, task_id=TASK_ID).serialize()
    assert SkinnyTask.deserialize(skinny).func_args == args
    return len(plain), len(skinny)


if __name__ == "__main__":
    print(f"{'payload':<22} {'Task':>8} {'SkinnyTask':>11} {'saved':>7}")
    for label, name, args in CASES:
        plain, skinny = sizes(name, args)
        saved = 100 * (plain - skinny) / plain
        print(f"{label:<22} {plain:>8} {skinny:>11} {saved:>6.1f}%")
