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
    Retry,
    SerializationError,
    TaskRunning,
    UnknownTaskError,
)
from .tasks import BoundTask, Options, TaskFunction, TaskHandle
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "App",
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
    "Retry",
    "SerializationError",
    "Task",
    "TaskFunction",
    "TaskHandle",
    "TaskRunning",
    "UnknownTaskError",
    "Worker",
    "__version__",
]
