"""Every exception gatorapp raises derives from :class:`GatorError`.

Where a built-in exception type already tells the caller what went wrong
(``TypeError`` for an argument msgpack cannot encode, ``ValueError`` for a bad
option), the gatorapp class derives from that too, so ``except TypeError``
keeps working.
"""

from __future__ import annotations


class GatorError(Exception):
    """Base class of every gatorapp error."""


class ConfigurationError(GatorError, ValueError):
    """A bad URL, option, app path or task definition."""


class NotAvailable(ConfigurationError):
    """The backend does not keep what was asked of it: the list of workers
    (SQS with no result store), dead letters or queue counts (a backend that
    implements delivery only)."""


class MissingDependencyError(ConfigurationError, ImportError):
    """A backend's driver is not installed; the message names the package."""


class SerializationError(GatorError, TypeError):
    """Task arguments that msgpack cannot encode. Nothing was enqueued."""


class PayloadTooLarge(GatorError, ValueError):
    """An encoded task is larger than the backend accepts. Nothing was enqueued."""


class DecodeError(GatorError, ValueError):
    """A payload that is not a valid gatorapp envelope."""


class UnknownTaskError(GatorError, LookupError):
    """A task name that is not in the app's registry."""


class BackendError(GatorError):
    """The backend could not be reached or refused an operation."""


class TaskRunning(GatorError):
    """An enqueue that names the id of a task running now, with another payload
    (other arguments or options). Refused, nothing of the call stored: the new
    task would otherwise be dropped. Enqueue it once the task has finished, or
    under another id."""


class LeaseLost(GatorError):
    """The task's lease expired and another worker took it over."""


class Rejected(GatorError):
    """A payload that cannot run (undecodable, unknown task or hook, too large):
    it goes to the dead letters with ``reason``."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


class Retry(GatorError):
    """Raise from a task to ask for another attempt.

    ``delay`` (seconds) overrides the task's backoff for this retry. The retry
    counts against the task's ``retries`` budget like any other failure; when
    the budget is spent the task goes to the dead letters.
    """

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        self.delay = delay
        self.reason = reason
        super().__init__(reason or f"retry requested (delay={delay})")


class TaskFailed(GatorError):
    """``handle.get()`` of a task that failed for good: it went to the dead
    letters after its retries (``status`` ``"dead"``), its return value could
    not be stored (``"failed"``), or it was cancelled (``"cancelled"``).

    ``str()`` names the remote exception's type and message; ``traceback``
    is the remote traceback's text (empty when there was none).
    """

    def __init__(
        self,
        task_id: str,
        status: str,
        reason: str,
        summary: str,
        traceback: str = "",
    ) -> None:
        self.task_id = task_id
        self.status = status
        self.reason = reason
        self.summary = summary
        self.traceback = traceback
        super().__init__(f"task {task_id} {status} ({reason}): {summary}")


class TaskTimeout(GatorError, TimeoutError):
    """An attempt ran past its task's ``timeout``: a failed attempt, retried
    as the task's policy says (see docs/asyncio.md for what stops it)."""


class ResultTimeout(GatorError, TimeoutError):
    """``handle.get(timeout=...)`` ran out of time before the task finished."""
