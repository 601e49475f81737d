"""One pass: candidate files in, outcomes out, one dbt build for the batch.

``--once`` is one pass over a scan of the landing zone; the daemon runs the same pass on the
files that settled. There is no second code path. Its parts: ``DatabaseSteps`` (each database
step, retried), ``Builds`` (the dbt build) and ``PassResult`` (what the pass did).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
import structlog

from watcher import runs
from watcher.builds import Builds
from watcher.config import Settings
from watcher.database import ConnectionHolder, lock_waits
from watcher.database_steps import DatabaseSteps, DatabaseUnavailable, LockTimeout
from watcher.errortext import first_line
from watcher.ingest import (
    FileOutcome,
    LoadLimits,
    is_unrouted,
    process_file,
    record_failed,
    record_ignored,
    retry_due,
    unchanged_since_recorded,
)
from watcher.landing.readiness import DropTimes
from watcher.landing.zone import Candidate
from watcher.lock_timeouts import LockTimeouts
from watcher.manifest import ManifestEntry, all_entries
from watcher.metrics import Metrics
from watcher.pass_result import EXIT_OK, PassResult
from watcher.progress import Progress
from watcher.routes import route_for
from watcher.small_files import GROUP_FILES, GroupResult, load_group
from watcher.stopping import PassInterrupted, StopRequest

if TYPE_CHECKING:
    from watcher.transform import Transformer

log = structlog.get_logger(__name__)


class Pipeline:
    """Loads candidate files and builds the models downstream of what landed."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        metrics: Metrics,
        *,
        transformer: Transformer | None = None,
        show_progress: bool = False,
    ) -> None:
        self.settings = settings
        self.db = ConnectionHolder(url, lock_timeout_ms=round(settings.lock_timeout_seconds * 1000))
        self.metrics = metrics
        self.show_progress = show_progress
        self.limits = LoadLimits(
            settings.max_line_bytes, settings.error_budget_fraction, settings.error_budget_rows
        )
        self.stop = StopRequest()
        self.locks = LockTimeouts(metrics, settings.lock_timeout_seconds)
        self.steps = DatabaseSteps(self.db, settings, metrics, self.locks, self.stop)
        self.builds = Builds(settings, metrics, transformer, self.steps, self.locks, self.stop)

    def cancel_statements(self) -> int:
        """Cancel what the pass waits for in the database now (its load, its dbt build).

        Safe from another thread (the daemon's stop); returns how many statements were asked.
        """
        asked = 1 if self.db.cancel() else 0
        return asked + self.builds.cancel()

    def lock_waits(self) -> list[str]:
        """What the pass's statements wait for now (relations, or kinds of lock); from any thread."""
        pids = [pid for pid in (self.db.backend_pid,) if pid is not None]
        pids += self.builds.backend_pids()
        return lock_waits(self.db.url, pids)

    def manifest_snapshot(self) -> dict[str, ManifestEntry]:
        try:
            entries: list[ManifestEntry] = self.steps.run(all_entries, cancellable=True)
        except PassInterrupted as exc:  # a stop cancelled the read: the callers know this one
            raise DatabaseUnavailable("stopping: the manifest read was cancelled") from exc
        return {e.source_path: e for e in entries}

    def pending(
        self, candidates: Iterable[Candidate], known: Mapping[str, ManifestEntry] | None = None
    ) -> list[Candidate]:
        """The candidates the manifest (``known``: a snapshot taken already) does not know in
        exactly this version; a file that failed only once it changed or its back-off (from the
        reconcile interval) is over."""
        known = self.manifest_snapshot() if known is None else known
        now, backoff = datetime.now(UTC), self.settings.reconcile_seconds
        waiting = []
        for candidate in candidates:
            if candidate.problem is None:
                try:
                    info = candidate.hint()
                except OSError:
                    waiting.append(candidate)
                    continue
                entry = known.get(candidate.relative)
                if unchanged_since_recorded(entry, info.st_size, info.st_mtime_ns, info.etag):
                    continue
                if (
                    entry is not None
                    and entry.status == "failed"
                    and not retry_due(entry, info, now, backoff)
                ):
                    continue
            elif (
                entry := known.get(candidate.relative)
            ) is not None and entry.error_reason == candidate.problem:
                continue
            waiting.append(candidate)
        return waiting

    def run_pass(
        self,
        candidates: list[Candidate],
        trigger: str,
        *,
        drop_times: Mapping[str, DropTimes] | None = None,
        json_output: bool = False,
        force: bool = False,
        should_stop: Callable[[], bool] | None = None,
        rebuild: Iterable[str] = (),
    ) -> PassResult:
        """Process the candidates, then one dbt build if anything landed; record the run.

        ``should_stop`` (default: the owner's, ``self.stop.check``) is asked before each file and while a
        file streams: once it answers True, no further file starts and the file in flight is
        rolled back (it stays pending). ``rebuild``: raw tables whose models are built even when
        nothing lands.
        """
        should_stop = should_stop or self.stop.check
        started = time.monotonic()
        result = PassResult(trigger)
        bound = log.bind(trigger=trigger)
        try:
            result.run_id = self.steps.run(lambda c: runs.open_run(c, trigger, self.settings.instance))
            bound = bound.bind(run_id=result.run_id)
            self.metrics.database_up.set(1)
            self._load_all(candidates, result, bound, json_output, force, should_stop)
            self.builds.build(result, bound, drop_times or {}, set(rebuild), should_stop)
        except LockTimeout as exc:
            result.infrastructure_error = str(exc)
            bound.error("lock_wait_gave_up", step="load", status="failed", error=str(exc))
        except DatabaseUnavailable as exc:
            result.infrastructure_error = str(exc)
            bound.error("database_unavailable", step="load", status="failed", error=str(exc))
        except PassInterrupted:
            result.interrupted = True
        except KeyboardInterrupt:  # a one-shot command's Ctrl-C, SIGTERM or SIGHUP
            result.interrupted = True
            result.duration_s = time.monotonic() - started
            self._record_interrupted(result)
            raise
        except psycopg.Error as exc:
            # Not transient (a statement timeout, a missing table): this pass fails, the next one
            # starts on a clean connection (``DatabaseSteps.run`` rolled this one back).
            result.infrastructure_error = f"database error: {first_line(exc)}"
            bound.error("pass_failed", step="pass", status="failed", error=result.infrastructure_error)
        if should_stop is not None and should_stop() and result.infrastructure_error:
            result.interrupted = True  # retries ended by the stop request, not given up
        if not result.infrastructure_error and not result.interrupted:
            self.locks.got_through("load")  # the loads got through
        result.duration_s = time.monotonic() - started
        self._close_run(result, bound)
        return result

    def _record_interrupted(self, result: PassResult) -> None:
        """The run row of a pass a signal cut short says ``interrupted``: one try, no retries
        (the user is leaving); the file in flight was rolled back with its transaction."""
        if result.run_id is None:
            return
        self.metrics.runs.labels(trigger=result.trigger, status=result.status).inc()
        try:
            with self.db.session() as conn:
                runs.close_run(conn, result.run_id, result.totals())
        except psycopg.Error as exc:
            log.warning("run_not_recorded", run_id=result.run_id, error=first_line(exc))

    def _load_all(
        self,
        candidates: list[Candidate],
        result: PassResult,
        bound: Any,
        json_output: bool,
        force: bool,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        # Files no route takes are never read: recorded together after the others, in one
        # statement and one log line, they cost next to nothing and hold no routed file back.
        unrouted = [c for c in candidates if is_unrouted(c)]
        if unrouted:
            candidates = [c for c in candidates if not is_unrouted(c)]
        enabled = self.show_progress and Progress.wanted(json_output)
        queue = deque(candidates)
        with Progress(candidates, enabled=enabled) as progress:
            # Small files in groups (one transaction, one COPY each); what a group hands back
            # (large files, paths that hold rows, files for the checked path) one by one after it.
            while queue:
                group = [queue.popleft() for _ in range(min(GROUP_FILES, len(queue)))]
                try:
                    self._stop_point(should_stop)
                    grouped = self._load_group(group, result.run_id, progress, force, should_stop)
                except PassInterrupted:
                    self._interrupted(result, bound, group[0], len(group) + len(queue))
                    return
                queue.extendleft(reversed(grouped.later))
                for outcome in grouped.outcomes:
                    self._answered(outcome, result, progress, bound)
                for index, candidate in enumerate(grouped.alone):
                    try:
                        self._stop_point(should_stop)
                        outcome = self._load_one(candidate, result.run_id, progress, force, should_stop)
                    except PassInterrupted:
                        self._interrupted(result, bound, candidate, len(grouped.alone) - index + len(queue))
                        return
                    self._answered(outcome, result, progress, bound)
        if unrouted and not (should_stop is not None and should_stop()):
            self._ignore_all(unrouted, result, bound)

    @staticmethod
    def _stop_point(should_stop: Callable[[], bool] | None) -> None:
        if should_stop is not None and should_stop():
            raise PassInterrupted

    @staticmethod
    def _interrupted(result: PassResult, bound: Any, candidate: Candidate, left: int) -> None:
        result.interrupted = True
        bound.warning("pass_interrupted", step="load", path=candidate.relative, left=left)

    def _answered(self, outcome: FileOutcome, result: PassResult, progress: Progress, bound: Any) -> None:
        result.outcomes.append(outcome)
        progress.file_done(outcome.relative, outcome.rows_loaded)
        self._observe(outcome, bound)

    def _load_group(
        self,
        group: list[Candidate],
        run_id: int | None,
        progress: Progress,
        force: bool,
        should_stop: Callable[[], bool] | None,
    ) -> GroupResult:
        def advance(count: int) -> None:
            progress.advance_bytes(count)
            self._stop_point(should_stop)  # unwinds the group's transaction: nothing of it commits

        def action(conn: psycopg.Connection[Any]) -> GroupResult:
            return load_group(conn, group, run_id=run_id, limits=self.limits, force=force, progress=advance)

        what = f"loading {len(group)} small files from {group[0].relative} on"
        try:
            grouped: GroupResult = self.steps.run(action, cancellable=True, waits_for=what)
        except psycopg.Error as exc:
            # A permanent database error in the group (say, disk full): each file alone, so that
            # the one it comes from is the one that gets it as its answer.
            self.db.close()
            log.warning("group_load_failed", step="load", files=len(group), error=first_line(exc))
            return GroupResult(alone=list(group))
        return grouped

    def _ignore_all(self, unrouted: list[Candidate], result: PassResult, bound: Any) -> None:
        try:
            outcomes: list[FileOutcome] = self.steps.run(lambda c: record_ignored(c, unrouted))
        except psycopg.Error as exc:  # not recorded: they come back at the next scan
            self.db.close()
            bound.error("files_ignored_not_recorded", step="load", files=len(unrouted), error=first_line(exc))
            return
        result.outcomes.extend(outcomes)
        self.metrics.files_processed.labels(table="none", outcome="ignored").inc(len(outcomes))
        if outcomes:
            bound.info(
                "files_ignored",
                step="load",
                status="ignored",
                files=len(outcomes),
                examples=[o.relative for o in outcomes[:5]],
                reason=outcomes[0].reason,
            )

    def _load_one(
        self,
        candidate: Candidate,
        run_id: int | None,
        progress: Progress,
        force: bool,
        should_stop: Callable[[], bool] | None = None,
    ) -> FileOutcome:
        def advance(count: int) -> None:
            progress.advance_bytes(count)
            if should_stop is not None and should_stop():
                raise PassInterrupted  # unwinds the file's transaction: nothing of it commits

        def action(conn: psycopg.Connection[Any]) -> FileOutcome:
            return process_file(
                conn,
                candidate,
                run_id=run_id,
                limits=self.limits,
                progress=advance,
                force=force,
            )

        table = route_for(os.path.basename(candidate.relative))
        what = f"loading {candidate.relative} into raw.{table.table if table else '?'}"
        try:
            outcome: FileOutcome = self.steps.run(action, cancellable=True, waits_for=what)
        except psycopg.Error as exc:
            # A permanent database error on this file (say, disk full): record and go on.
            self.db.close()
            outcome = FileOutcome(candidate.relative, "failed", reason=f"database error: {first_line(exc)}")
            self._record_failure(candidate, outcome)
        return outcome

    def _record_failure(self, candidate: Candidate, outcome: FileOutcome) -> None:
        try:
            self.steps.run(lambda conn: record_failed(conn, candidate, outcome.reason or "failed"))
        except psycopg.Error as exc:
            log.error("failure_not_recorded", path=outcome.relative, error=first_line(exc))

    def _observe(self, outcome: FileOutcome, bound: Any) -> None:
        table = outcome.table or "none"
        status = runs.word(outcome.outcome)
        self.metrics.files_processed.labels(table=table, outcome=status).inc()
        event = f"file_{status}"
        level = "warning" if outcome.is_failure else ("debug" if outcome.outcome == "skipped" else "info")
        getattr(bound, level)(
            event,
            step="load",
            status=status,
            path=outcome.relative,
            table=outcome.table,
            rows=outcome.rows_loaded,
            rows_rejected=outcome.rows_rejected,
            duration_ms=round(outcome.duration_s * 1000, 1),
            reason=outcome.reason,
            warnings=outcome.warnings,
        )
        if outcome.outcome == "loaded":
            self.metrics.rows_loaded.labels(table=table).inc(outcome.rows_loaded)
            self.metrics.load_duration.labels(table=table).observe(outcome.duration_s)
            self.metrics.last_load.set_to_current_time()
        if outcome.rows_rejected:
            self.metrics.rows_rejected.labels(table=table).inc(outcome.rows_rejected)

    def catch_up(self) -> PassResult | None:
        """One build for data loaded but never built (a crash between load and build), or whose
        models are missing (an upgrade dropped them); else nothing."""
        tables = self.builds.catch_up_tables()
        return self.run_pass([], "startup", rebuild=tables) if tables else None

    def retry_build(self) -> PassResult | None:
        """Build again what a build that failed on a transient fault left stale (the daemon's
        backstop tick); nothing when nothing is stale."""
        tables = self.builds.retry_tables()
        return self.run_pass([], "reconcile", rebuild=tables) if tables else None

    def warm_up(self) -> None:
        """Parse the dbt project now (``Builds.warm_up``); safe from another thread."""
        self.builds.warm_up()

    def _close_run(self, result: PassResult, bound: Any) -> None:
        self.metrics.runs.labels(trigger=result.trigger, status=result.status).inc()
        if result.run_id is not None:
            try:
                self.steps.run(lambda c: runs.close_run(c, result.run_id, result.totals()))
            except (DatabaseUnavailable, psycopg.Error) as exc:
                bound.error("run_not_recorded", error=first_line(exc))
        if result.failures or result.exit_code != EXIT_OK:
            bound.warning(
                "pass_finished_with_errors",
                step="pass",
                status=result.status,
                duration_ms=round(result.duration_s * 1000),
                error_summary=result.error_summary(),
            )
        else:
            bound.info(
                "pass_finished",
                step="pass",
                status=result.status,
                duration_ms=round(result.duration_s * 1000),
                files_loaded=result.count("loaded"),
                rows_loaded=result.rows_loaded,
            )

    def close(self) -> None:
        self.db.close()
