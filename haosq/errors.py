"""The exceptions haosq users see.

Every user-facing error derives from `HaosqError`; the CLI prints its message on one
line and exits with code 2. Anything else is an internal error (exit code 1).
"""

from __future__ import annotations

from datetime import datetime


class HaosqError(Exception):
    """Base class of the errors a user can act on."""


class ConfigError(HaosqError):
    """The configuration is invalid (a bad value, an unknown key, an unreadable file)."""


class DatabaseUnavailable(HaosqError):
    """The configured database cannot be reached."""


class InvalidJob(HaosqError):
    """A job could not be enqueued because its type, payload or options are invalid."""


class UnknownJobType(HaosqError):
    """No handler is registered for a job type."""


class JobNotFound(HaosqError):
    """No job has the given id."""


class InvalidTransition(HaosqError):
    """An operator action does not apply to the job in its current state."""


class WorkerIdInUse(HaosqError):
    """Another live worker already uses the requested worker id."""


class Retry(Exception):
    """Raised by a handler to have its job retried, optionally at a given time or delay."""

    def __init__(self, reason: str = "retry requested", *, after: float | datetime | None = None):
        super().__init__(reason)
        self.after = after


class PermanentError(Exception):
    """Raised by a handler to fail its job at once, without further attempts."""
