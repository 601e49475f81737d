"""The daemon's batches: one ``Pipeline.run_pass`` over what settled, backing off while the
database is away, and the retry of a build that failed on a transient fault.

Threads: runs on the main thread; the HTTP threads read ``in_flight``, ``pass_started`` and
``problem``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import structlog

from watcher.config import Settings
from watcher.database_steps import DatabaseUnavailable
from watcher.errortext import first_line, first_text_line
from watcher.intake import Intake, relative_to_zone
from watcher.landing.readiness import DropTimes, Settled
from watcher.landing.scanner import inspect_entry
from watcher.landing.zone import Candidate
from watcher.pipeline import Pipeline

log = structlog.get_logger(__name__)

MAX_BACKOFF_SECONDS = 60.0


class BatchRunner:
    """Runs the batches the loop hands it, one at a time, and keeps what a failed one left."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        intake: Intake,
        *,
        should_stop: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = pipeline.metrics
        self.intake = intake
        self.should_stop = should_stop
        self.clock = clock
        self.problem: str | None = None
        """Why the last batch could not run (a database error), until a batch runs (for /readyz)."""
        self.pass_started: float | None = None
        self.in_flight: tuple[int, float] | None = None
        """Files of the pass running, and when the oldest of them was first seen."""
        self.retry_at = 0.0
        """No batch before this time: the database was away."""
        self.backoff = 0.0

    def run(self, batch: list[Settled]) -> None:
        """One pass over the files that settled and the entries that wait as they are."""
        extra = self.intake.take_immediate()
        candidates = [inspect_entry(self.settings.data_dir, Path(item.path)) for item in batch]
        candidates += [candidate for candidate, _ in extra]
        try:
            waiting = self.pipeline.pending(candidates)
        except (DatabaseUnavailable, psycopg.Error) as exc:
            self._defer(batch, extra, str(exc))
            return
        if not waiting:
            self.problem = None  # the batch could run: there was nothing left to do
        if not waiting or self.should_stop():
            return  # what is not loaded stays in the landing zone for the next start
        origins = {item.origin for item in batch} | {origin for _, origin in extra}
        trigger = "startup" if "startup" in origins else "event" if "event" in origins else "reconcile"
        drop_times = self._drop_times(batch) | _object_drop_times(extra)
        for item in batch:
            if item.forced:
                log.warning("file_settled_without_close", path=relative_to_zone(self.settings, item.path))
        oldest = min((item.first_seen for item in batch), default=self.clock())
        self.in_flight = (len(waiting), oldest)
        self.pass_started = self.clock()
        try:
            result = self.pipeline.run_pass(
                waiting, trigger, drop_times=drop_times, should_stop=self.should_stop
            )
        finally:
            self.in_flight = None
            self.pass_started = None
        if result.infrastructure_error:
            self._defer(batch, extra, result.infrastructure_error)
        else:
            self.backoff = 0.0
            self.problem = None

    def retry_build(self) -> None:
        """A build that failed on a transient fault is tried again at each backstop tick, so the
        models converge without a new file."""
        if not self.pipeline.builds.retry_wanted or self.should_stop():
            return
        self.pass_started = self.clock()
        try:
            self.pipeline.retry_build()
        except (DatabaseUnavailable, psycopg.Error) as exc:
            log.warning("build_retry_deferred", step="reconcile", error=first_line(exc))
        finally:
            self.pass_started = None

    def _drop_times(self, batch: list[Settled]) -> dict[str, DropTimes]:
        """When each file was first seen and when it settled, on the wall clock (drop-to-ready)."""
        offset = time.time() - self.clock()
        return {
            relative_to_zone(self.settings, item.path): DropTimes(
                item.first_seen + offset, item.settled_at + offset
            )
            for item in batch
        }

    def _defer(self, batch: list[Settled], extra: list[tuple[Candidate, str]], error: str) -> None:
        """The database is away: keep the files pending and try again later, backing off."""
        self.intake.give_back(batch, extra)
        self.backoff = min(MAX_BACKOFF_SECONDS, max(1.0, self.backoff * 2))
        self.retry_at = self.clock() + self.backoff
        self.problem = first_text_line(error) or "a database error"
        if not self.pipeline.locks.problem:  # a lock wait is no outage
            self.metrics.database_up.set(0)
        log.warning(
            "batch_deferred",
            step="daemon",
            files=len(batch) + len(extra),
            retry_in_s=self.backoff,
            error=first_text_line(error) or None,
        )


def _object_drop_times(entries: list[tuple[Candidate, str]]) -> dict[str, DropTimes]:
    """An object found by a poll was complete when it was put: its drop time is its Last-Modified
    (whole seconds), and it settled then too. The backlog at start has no drop to time."""
    return {
        candidate.relative: DropTimes(candidate.version.st_ctime, candidate.version.st_ctime)
        for candidate, origin in entries
        if origin == "event" and candidate.version is not None and candidate.version.etag is not None
    }
