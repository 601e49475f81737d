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


def is_transient(exc: BaseException) -> bool:
    """True for faults that may pass by themselves: connection lost or refused, shutdown, races.

    ``psycopg.OperationalError`` without a SQLSTATE is what a refused or dropped connection
    raises; one with a SQLSTATE (say, disk full) is a problem a retry will not fix.
    """
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    if isinstance(exc, psycopg.OperationalError) and not isinstance(exc, psycopg.errors.DiskFull):
        return exc.sqlstate is None or exc.sqlstate.startswith("08") or exc.sqlstate.startswith("57P")
    return False


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "transient_fault_retrying",
        attempt=state.attempt_number,
        error=type(exc).__name__ if exc else None,
        detail=str(exc).splitlines()[0] if exc else None,
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
