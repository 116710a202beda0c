"""Checked by mypy in tests/test_typing.py; the comments mark expected errors."""

from gatorapp import App, TaskHandle

app = App("memory://")


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task(queue="emails", retries=2)
def send(user_id: int, *, urgent: bool = False) -> None: ...


total: int = add(2, 3)
handle: TaskHandle[int] = add.delay(2, 3)
task_id: str = handle.id
add.options(queue="urgent", delay_by=30).delay(2, 3)
send.delay(1, urgent=True)
add.delay("2", 3)  # E: arg-type
add.delay(2)  # E: call-arg
send.delay(1, loud=True)  # E: call-arg
add.options(queue="x").delay(2, "3")  # E: arg-type

results_app = App("memory://", results=True)


@results_app.task
def double(x: int) -> int:
    return 2 * x


value: int = double.delay(2).get(timeout=1)
wrong: str = double.delay(2).get(timeout=1)  # E: assignment
state: str = double.delay(2).status()
done: bool = app.result("some-id").ready()


@app.periodic(every=30)
def refresh() -> int:
    return 1


count: int = refresh()
refresh.delay(1)  # E: call-arg
