"""The pass's database work, one step at a time: retried on transient faults, cancellable on a stop."""

from __future__ import annotations

from typing import Any

import psycopg
from tenacity import stop_any
from tenacity.stop import stop_base

from watcher.config import Settings
from watcher.database import ConnectionHolder
from watcher.errortext import first_line
from watcher.lock_timeouts import LockTimeouts
from watcher.metrics import Metrics
from watcher.retry import is_transient, transient_retrying
from watcher.stopping import PassInterrupted, StopRequest, StopWhen


class DatabaseUnavailable(RuntimeError):
    """The database stayed unreachable through every retry."""


class LockTimeout(DatabaseUnavailable):
    """A statement kept waiting for a lock past the lock timeout, through every retry."""


class DatabaseSteps:
    """Runs each database step of a pass on the pass's one connection (``db``)."""

    def __init__(
        self,
        db: ConnectionHolder,
        settings: Settings,
        metrics: Metrics,
        locks: LockTimeouts,
        stop: StopRequest,
    ) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.locks = locks
        self.stop = stop

    def _retrying(self) -> Any:
        policy = transient_retrying(
            self.settings.retry_total_seconds,
            self.settings.retry_max_wait_seconds,
            on_retry=lambda _state: self.db.close(),
        )
        if self.stop.check is None or not isinstance(policy.stop, stop_base):
            return policy
        # A stop request also ends a wait between two attempts (the policy's own sleep would not).
        return policy.copy(stop=stop_any(policy.stop, StopWhen(self.stop.check)), sleep=self.stop.sleep)

    def run(self, action: Any, *, cancellable: bool = False, waits_for: str | None = None) -> Any:
        """Run ``action(conn)`` with retries on transient faults; DatabaseUnavailable at the end.

        Whatever ``action`` raises, the connection ends outside a transaction (rolled back or
        discarded): a failed step never poisons the next. ``cancellable``: a stop request may
        cancel the statement in flight (``Pipeline.cancel_statements``); the step then ends with
        PassInterrupted. ``waits_for`` names the step for a lock timeout's message.
        """

        def run_once() -> Any:
            with self.db.session() as conn:
                if not cancellable:
                    return action(conn)
                with self.db.cancellable():
                    return action(conn)

        try:
            for attempt in self._retrying():
                with attempt:
                    try:
                        return run_once()
                    except psycopg.errors.LockNotAvailable:
                        self.locks.timed_out("load", waits_for or "the pipeline's bookkeeping")
                        raise
        except psycopg.Error as exc:
            if cancellable and self.stop.asked():
                raise PassInterrupted from exc
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                raise LockTimeout(self.locks.problem or first_line(exc)) from exc
            if is_transient(exc):
                self.metrics.database_up.set(0)
                raise DatabaseUnavailable(f"database unreachable: {first_line(exc)}") from exc
            raise
        raise AssertionError("unreachable")
