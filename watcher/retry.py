"""Retry policies: transient database faults only, with exponential backoff and jitter."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import structlog
from psycopg import errors
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from watcher.errortext import first_line

log = structlog.get_logger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    errors.AdminShutdown,
    errors.CrashShutdown,
    errors.CannotConnectNow,
    errors.SerializationFailure,
    errors.DeadlockDetected,
    errors.LockNotAvailable,
    errors.ConnectionException,
    errors.TooManyConnections,
)


# A failed connection carries no SQLSTATE (libpq keeps only the text of the server's answer), so
# these are told apart by the server's own words. A server that answered FATAL refuses for good,
# unless it says it is starting, stopping or full; a failure before any answer (refused, reset,
# timed out, host not found yet) may heal, unless libpq itself says a setting is wrong.
TRANSIENT_SERVER_ANSWERS = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "too many clients already",
    "remaining connection slots are reserved",
    "too many connections for",
    "terminating connection",
    "canceling authentication due to timeout",
)
PERMANENT_CLIENT_ANSWERS = (
    "no password supplied",
    "certificate",
    "alert unknown ca",
    "does not support ssl",
    "ssl was required",
    "invalid sslmode",
    "invalid connection option",
    "invalid integer value",
    "invalid port number",
    "channel binding",
    "server requested",
)
PERMANENT_SQLSTATES = ("57P04",)  # database_dropped: waiting does not bring it back
# dbt reports a node's database error as text only (no SQLSTATE): what heals by waiting is told
# by its words. The server's answers above, and the messages of the SQLSTATEs ``is_transient``
# retries (40001, 40P01, 55P03, 57P01-57P03, 53300) and of libpq (psycopg2's, in dbt) for a
# connection that failed or was lost.
TRANSIENT_MESSAGES = (
    *TRANSIENT_SERVER_ANSWERS,
    "canceling statement due to lock timeout",
    "could not obtain lock",
    "deadlock detected",
    "could not serialize access",
    "too many connections",
    "server closed the connection unexpectedly",
    "connection already closed",
    "no connection to the server",
    "could not connect to server",
    "connection refused",
    "failed: no such file or directory",  # the server's socket is gone: it is restarting
    "connection timed out",
    "ssl connection has been closed unexpectedly",
    "could not receive data from server",
    "could not send data to server",
)


def connection_refused_for_good(message: str) -> bool:
    """True when a connection failure's text says a setting is wrong (see the lists above)."""
    text = message.lower()
    if "fatal:" in text:
        return not any(answer in text for answer in TRANSIENT_SERVER_ANSWERS)
    return any(answer in text for answer in PERMANENT_CLIENT_ANSWERS)


def is_transient(exc: BaseException) -> bool:
    """True for faults that may pass by themselves: connection lost or refused, shutdown, races.

    The one place that decides what is retried. ``psycopg.OperationalError`` without a SQLSTATE
    is a connection that failed or dropped: transient unless the server (or libpq) said that a
    setting is wrong (database or role missing, password, pg_hba, certificate). One with a
    SQLSTATE outside classes 08 and 57P (say, disk full) is a problem a retry will not fix.
    """
    sqlstate: str | None = getattr(exc, "sqlstate", None)
    if sqlstate in PERMANENT_SQLSTATES:
        return False
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    if isinstance(exc, psycopg.OperationalError) and not isinstance(exc, psycopg.errors.DiskFull):
        if sqlstate is None:
            return not connection_refused_for_good(str(exc))
        return sqlstate.startswith("08") or sqlstate.startswith("57P")
    return False


def transient_line(text: str | None) -> str | None:
    """The line of an error text (dbt's) that names a fault that heals by waiting; None if none
    does."""
    for line in (text or "").splitlines():
        lowered = line.lower()
        if any(phrase in lowered for phrase in TRANSIENT_MESSAGES):
            return line.strip()
    return None


def is_transient_message(text: str | None) -> bool:
    """Whether an error text (dbt's) names a fault that heals by waiting."""
    return transient_line(text) is not None


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "transient_fault_retrying",
        attempt=state.attempt_number,
        error=type(exc).__name__ if exc else None,
        detail=first_line(exc) if exc else None,
        wait_s=round(state.upcoming_sleep, 2),
    )


def transient_retrying(
    total_seconds: float,
    max_wait_seconds: float,
    *,
    on_retry: Callable[[RetryCallState], None] | None = None,
) -> Retrying:
    """A tenacity policy: retry transient faults for up to ``total_seconds``, then re-raise."""

    def before_sleep(state: RetryCallState) -> None:
        _log_retry(state)
        if on_retry is not None:
            on_retry(state)

    return Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_delay(total_seconds),
        wait=wait_random_exponential(multiplier=0.25, max=max_wait_seconds),
        before_sleep=before_sleep,
        reraise=True,
    )
