"""The daemon's health: the answers of /healthz and /readyz, the pending-file gauges, the
database check of an idle loop.

Threads: ``liveness``, ``readiness``, ``pending_count`` and ``oldest_pending_age`` are called by
the HTTP threads, and read what the main thread writes; ``check_database`` runs on the main thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from watcher.batches import BatchRunner
from watcher.config import Settings
from watcher.intake import Intake
from watcher.pipeline import Pipeline

HEARTBEAT_LIMIT_SECONDS = 60.0
DATABASE_CHECK_SECONDS = 15.0
CONNECT_TIMEOUT_SECONDS = 3


class Health:
    """What the endpoint answers, from the intake, the batches and what the loop reports here."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        intake: Intake,
        batches: BatchRunner,
        *,
        stopping: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = pipeline.metrics
        self.intake = intake
        self.batches = batches
        self.stopping = stopping
        self.clock = clock
        self.started = False
        """The backlog at start is done (written by the loop)."""
        self.warm = threading.Event()
        """dbt has parsed the project (set by the warm-up thread)."""
        self.heartbeat = clock()
        """The last turn of the loop (written by the loop)."""
        self.next_database_check = 0.0

    def check_database(self, now: float) -> None:
        if now < self.next_database_check:
            return
        self.next_database_check = now + DATABASE_CHECK_SECONDS
        self.metrics.database_up.set(1 if self._database_answers() else 0)

    def _database_answers(self) -> bool:
        return self.pipeline.db.ping(CONNECT_TIMEOUT_SECONDS)

    def liveness(self) -> tuple[bool, str]:
        """The process, its observer threads and its loop are alive (called by /healthz)."""
        if self.intake.poller is not None:
            if not self.started:
                return True, "starting"
            if self.clock() - self.heartbeat > HEARTBEAT_LIMIT_SECONDS and self.batches.pass_started is None:
                return False, "the main loop has not ticked for a minute"
            return True, "ok (listing)"
        if self.intake.watcher is None:
            return True, "starting"
        if self.intake.zone_missing:
            return False, f"the landing zone {self.settings.data_dir} does not exist"
        if not self.intake.watcher.alive():
            return False, f"the {self.intake.watcher.backend} observer thread stopped"
        busy = self.batches.pass_started is not None or not self.started
        if not busy and self.clock() - self.heartbeat > HEARTBEAT_LIMIT_SECONDS:
            return False, "the main loop has not ticked for a minute"
        return True, f"ok ({self.intake.watcher.backend})"

    def readiness(self) -> tuple[bool, str]:
        """Started, the database answers, the last dbt build did not fail (called by /readyz)."""
        if not self.started:
            return False, "starting: the backlog is being loaded"
        if not self.warm.is_set():
            return False, "starting: dbt is parsing the project"
        if self.stopping():
            return False, "stopping"
        up = self._database_answers()
        self.metrics.database_up.set(1 if up else 0)
        if not up:
            return False, "the database does not answer"
        if self.batches.pass_started is not None and (waits := self.pipeline.lock_waits()):
            return False, f"waiting for a lock on {', '.join(waits)}"
        if self.pipeline.locks.problem:
            return False, self.pipeline.locks.problem
        if self.intake.listing_problem:
            return False, f"the landing zone cannot be listed: {self.intake.listing_problem}"
        if self.batches.problem:
            return False, f"the last batch could not run: {self.batches.problem}"
        if self.pipeline.builds.last_failed:
            return False, "the last dbt build failed"
        return True, "ready"

    # Read by the HTTP threads at scrape time: one read of ``in_flight`` each, it may change.

    def pending_count(self) -> float:
        flight = self.batches.in_flight
        return float(len(self.intake.tracker) + len(self.intake.immediate) + (flight[0] if flight else 0))

    def oldest_pending_age(self) -> float:
        flight = self.batches.in_flight
        times = [
            t
            for t in (self.intake.tracker.oldest_first_seen(), flight[1] if flight else None)
            if t is not None
        ]
        return max(0.0, self.clock() - min(times)) if times else 0.0
