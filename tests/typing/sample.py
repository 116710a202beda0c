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


@results_app.task(timeout=30)
async def fetch(url: str) -> int:
    return len(url)


async def producer() -> None:
    h = await fetch.adelay("https://example.org")
    n: int = await h.aget(timeout=10)
    s: str = await h.aget()  # E: assignment
    await fetch.adelay(1)  # E: arg-type
    await fetch.options(queue="fetch", timeout=5).adelay("u")
    hs: list[TaskHandle[int]] = await fetch.amap(["a", "b"])
    state: str = await h.astatus()
    del n, s, hs, state


synced: int = fetch.delay("u").get()
coro = fetch("u")  # calling it makes the coroutine
awaited_wrong: int = fetch("u")  # E: assignment
