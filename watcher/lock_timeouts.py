"""The last lock wait that timed out, in a load or in dbt, until that step gets through."""

from __future__ import annotations

import structlog

from watcher.metrics import Metrics

log = structlog.get_logger(__name__)


class LockTimeouts:
    """Counts and logs each lock timeout; ``problem`` is what /readyz says meanwhile."""

    def __init__(self, metrics: Metrics, timeout_seconds: float) -> None:
        self.metrics = metrics
        self.timeout_seconds = timeout_seconds
        self.problem: str | None = None
        """The last lock wait that timed out, until the step that timed out succeeds (for /readyz)."""
        self.step: str | None = None
        """The step (``load`` or ``dbt``) whose lock wait timed out last."""

    def timed_out(self, step: str, what: str) -> None:
        self.metrics.lock_timeouts.labels(step=step).inc()
        self.step = step
        seconds = self.timeout_seconds
        self.problem = f"a lock wait timed out ({seconds:g} s) {what}; retrying"
        log.warning("lock_timeout", step=step, waited_s=seconds, what=what)

    def got_through(self, step: str) -> None:
        """``step`` succeeded: a lock wait it timed out in before is over."""
        if self.step == step:
            self.step = self.problem = None
