"""The error tree: every error rawexport raises on purpose descends from RawexportError, and
its branch says what to do with it.

- UserError: the input (a request, a command, a file) must change. It carries the HTTP
  status (4xx) it is answered with, the message the client is shown (`public()`) and
  details (`errors`); the CLI prints the message (exit code 1).
- TransientError: a backend is unavailable (S3 unreachable, the catalog database
  unreachable or restarting, a lock or pool timeout): the same thing may work later. The
  API answers 503 with `Retry-After`; an export job retries (at most max_attempts times).
- PermanentError: the same input fails again (a stored file that is not Parquet, a row
  larger than a part): an export job ends in ERROR at once.

LeaseLost is on no branch either, on purpose: an export attempt whose job's lease expired
stops and leaves the job to its new owner (neither a retry nor a failure of the job).

Errors on no branch (a bug, a library's error nobody classified) are unknown: the API answers
500 with a request id; an export job retries them, and ends in ERROR when the same failure
comes back on its next attempt. Classes that are also ValueErrors stay so: callers catch them
as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Seconds a client is told to wait (Retry-After) when a backend is unavailable.
RETRY_AFTER = 5


class RawexportError(Exception):
    """The root of the errors rawexport raises on purpose."""


class UserError(RawexportError):
    """Input the user must change; answered with `status` (4xx) and `public()`.

    `errors`: details an answer lists besides the message (the error body's `errors`)."""

    status: int = 400

    def __init__(
        self, message: str = "", *, status: int | None = None, errors: Sequence[Any] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.errors: list[Any] = list(errors)

    def public(self) -> str:
        """The message an answer gives the client (str() may say more, for the log)."""
        return self.message


class TransientError(RawexportError):
    """A backend is unavailable; retry after `retry_after` seconds."""

    retry_after: int = RETRY_AFTER
    backend: str = "a backend"  # what is unavailable, as a client is told

    def public(self) -> str:
        """What a client is told (str() may name the backend's address: for the log)."""
        return unavailable(self.backend)


class PermanentError(RawexportError):
    """Doing it again fails the same way: an export job ends in ERROR at once."""


def unavailable(backend: str) -> str:
    """The public message of an outage of `backend`."""
    return f"Service Unavailable: {backend} does not answer; retry later"


class LeaseLost(RawexportError):
    """The job's lease expired and another worker may own it now: the attempt stops, and
    leaves the job to its new owner (neither a retry nor a failure of the job)."""
