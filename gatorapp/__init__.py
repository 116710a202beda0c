"""gatorapp: a task queue. ``@app.task``, ``.delay()``, and a worker that loses nothing."""

from .app import App
from .envelope import Task
from .errors import (
    BackendError,
    ConfigurationError,
    DecodeError,
    GatorError,
    LeaseLost,
    MissingDependencyError,
    PayloadTooLarge,
    Rejected,
    ResultTimeout,
    Retry,
    SerializationError,
    TaskFailed,
    TaskRunning,
    TaskTimeout,
    UnknownTaskError,
)
from .tasks import AsyncTaskFunction, BoundTask, Options, TaskFunction, TaskHandle
from .worker import Worker

__version__ = "0.1.0"

#: Alligator's names that gatorapp does not have, and what to use instead.
_ALLIGATOR = {
    "Gator": "App: app = App(url), then @app.task and fn.delay(...) (see docs/alligator.md)",
}


def __getattr__(name: str) -> object:
    if name in _ALLIGATOR:
        # An ImportError, so that ``from gatorapp import Gator`` shows this line.
        raise ImportError(f"gatorapp has no {name}; use {_ALLIGATOR[name]}", name=name)
    raise AttributeError(f"module 'gatorapp' has no attribute {name!r}")


__all__ = [
    "App",
    "AsyncTaskFunction",
    "BackendError",
    "BoundTask",
    "ConfigurationError",
    "DecodeError",
    "GatorError",
    "LeaseLost",
    "MissingDependencyError",
    "Options",
    "PayloadTooLarge",
    "Rejected",
    "ResultTimeout",
    "Retry",
    "SerializationError",
    "Task",
    "TaskFailed",
    "TaskFunction",
    "TaskHandle",
    "TaskRunning",
    "TaskTimeout",
    "UnknownTaskError",
    "Worker",
    "__version__",
]
