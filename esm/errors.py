"""The error tree: every error esm raises on purpose, each saying whether a retry can help."""

from __future__ import annotations

from typing import ClassVar


def describe(exc: BaseException) -> str:
    """An error in one line, `Type: message`, for logs and /status: never a traceback. An
    exception group (from a task group) lists each error it holds."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in exc.exceptions)
    lines = f"{type(exc).__name__}: {exc}".splitlines()
    return lines[0] if lines else type(exc).__name__


class EsmError(Exception):
    """Base of every error esm raises on purpose."""

    retriable: ClassVar[bool] = False


class ConfigError(EsmError):
    """The configuration is invalid; `problems` lists the problems found, one line each, and
    `omitted` counts those found beyond them (a broken file can hold a million)."""

    def __init__(self, problems: list[str], omitted: int = 0) -> None:
        self.problems = problems
        self.omitted = omitted
        more = [f"and {omitted} more"] if omitted else []
        super().__init__("\n".join([*problems, *more]))


class SourceError(EsmError):
    """Reading from the event source failed in a way that waiting will not fix."""


class TransientSourceError(SourceError):
    """Reading failed for now (throttled, network, 5xx): back off and try again."""

    retriable = True


class ThroughputExceeded(TransientSourceError):
    """The source throttled the read (ProvisionedThroughputExceededException)."""


class ExpiredIterator(SourceError):
    """The shard iterator expired: get a new one after the last checkpoint."""

    retriable = True


class ResourceNotFound(SourceError):
    """The stream, shard or queue does not exist (or no longer does)."""


class DataTrimmed(ExpiredIterator):
    """The records asked for are past the stream's retention and gone: read on from the
    oldest record left (TrimmedDataAccessException)."""


class AccessDenied(SourceError):
    """AWS refused the call: the credentials lack a permission, or are not accepted."""


class ServiceUnreachable(TransientSourceError):
    """No answer from AWS: connection refused or reset, DNS, a connect timeout."""


class ReadTimedOut(ServiceUnreachable):
    """The request went out but no answer came within the client's read timeout."""


class NoCredentials(TransientSourceError):
    """No AWS credentials were found. Retried, so that esm stays up and says what is wrong;
    a client looks for credentials when it is created, so only a restart picks up new ones."""


class CheckpointError(EsmError):
    """The checkpoint store could not load or save."""

    retriable = True


class BackendError(EsmError):
    """A function backend could not be set up (bad handler path, bad URL)."""


class InvocationError(EsmError):
    """Raised by a function backend (a plugin's, say) to tell how a failed invocation counts.

    Any other exception a backend raises counts as a system error: retried with backoff and
    never against MaximumRetryAttempts. `kind` is one of "function_error" (the function
    failed: counts as an attempt), "throttle" or "system_error"; `retry_after` asks for a
    minimum delay before the next attempt, in seconds.
    """

    retriable = True
    KINDS: ClassVar[frozenset[str]] = frozenset({"function_error", "throttle", "system_error"})

    def __init__(
        self, message: str, *, kind: str = "system_error", retry_after: float | None = None
    ) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {sorted(self.KINDS)}, not {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class SettingError(EsmError):
    """A setting that validated cannot be used where esm runs (an address that cannot be
    bound); the message names the setting."""
