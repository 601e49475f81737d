"""One pass: candidate files in, outcomes out, one dbt build for the batch.

``--once`` is one pass over a scan of the landing zone; the daemon runs the same pass on the
files that settled. There is no second code path.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_delay,
    stop_any,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from watcher import runs
from watcher.config import Settings
from watcher.database import ConnectionHolder, lock_waits
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
from watcher.manifest import ManifestEntry, all_entries
from watcher.metrics import Metrics
from watcher.progress import Progress
from watcher.retry import is_transient, transient_retrying
from watcher.routes import route_for
from watcher.small_files import GROUP_FILES, GroupResult, load_group

if TYPE_CHECKING:
    from watcher.transform import BuildResult, Transformer

# watcher.transform (dbt's side) is imported only where a transformer is at work: a pass without
# dbt never loads it.

log = structlog.get_logger(__name__)

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INFRASTRUCTURE = 0, 1, 2, 3
LOADING_OUTCOMES = ("loaded", "duplicate")


class DatabaseUnavailable(RuntimeError):
    """The database stayed unreachable through every retry."""


class LockTimeout(DatabaseUnavailable):
    """A statement kept waiting for a lock past the lock timeout, through every retry."""


class PassInterrupted(Exception):
    """The caller asked the pass to stop: the file in flight rolls back, the others wait."""


@dataclass
class PassResult:
    trigger: str
    run_id: int | None = None
    outcomes: list[FileOutcome] = field(default_factory=list)
    build: BuildResult | None = None
    build_error: str | None = None
    infrastructure_error: str | None = None
    interrupted: bool = False
    """A stop request cut the pass short: files left pending, or a build cut off or not retried."""
    duration_s: float = 0.0

    def count(self, *outcomes: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome in outcomes)

    @property
    def failures(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.is_failure]

    @property
    def rows_loaded(self) -> int:
        return sum(o.rows_loaded for o in self.outcomes if o.outcome == "loaded")

    @property
    def rows_rejected(self) -> int:
        return sum(o.rows_rejected for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        if self.infrastructure_error or self.build_error:
            return EXIT_INFRASTRUCTURE
        if self.failures or (self.build is not None and self.build.status != "success"):
            return EXIT_FAILURES
        return EXIT_OK

    @property
    def status(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.infrastructure_error:
            return "failed"
        if self.exit_code == EXIT_OK:
            return "success"
        return "partial" if self.count("loaded", "skipped", "duplicate") else "failed"

    def error_summary(self) -> str | None:
        parts = [f"{o.relative}: {o.reason}" for o in self.failures]
        if self.build is not None and self.build.summary():
            parts.append(f"dbt: {self.build.summary()}")
        if self.build_error:
            parts.append(f"dbt: {self.build_error}")
        if self.infrastructure_error:
            parts.append(self.infrastructure_error)
        text = "; ".join(parts)
        return text[:4000] if text else None

    def totals(self) -> runs.RunTotals:
        return runs.RunTotals(
            status=self.status,
            files=runs.count_words(o.outcome for o in self.outcomes),
            rows_loaded=self.rows_loaded,
            rows_rejected=self.rows_rejected,
            dbt_status=self.build.status if self.build else ("error" if self.build_error else None),
            error_summary=self.error_summary(),
        )


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
        self.transformer = transformer
        self.show_progress = show_progress
        self.limits = LoadLimits(
            settings.max_line_bytes, settings.error_budget_fraction, settings.error_budget_rows
        )
        self.last_build_failed = False
        self.build_retry_wanted = False
        """The last build failed on a transient fault: the daemon tries it again at its backstop tick."""
        self.lock_problem: str | None = None
        """The last lock wait that timed out, until the step that timed out succeeds (for /readyz)."""
        self._lock_step: str | None = None
        self.should_stop: Callable[[], bool] | None = None
        """Set by a long-running owner (the daemon): True ends retries early and stops passes."""

    def _stopping(self) -> bool:
        return self.should_stop is not None and self.should_stop()

    def _retrying(self) -> Any:
        policy = transient_retrying(
            self.settings.retry_total_seconds,
            self.settings.retry_max_wait_seconds,
            on_retry=lambda _state: self.db.close(),
        )
        if self.should_stop is None or not isinstance(policy.stop, stop_base):
            return policy
        # A stop request also ends a wait between two attempts (the policy's own sleep would not).
        return policy.copy(stop=stop_any(policy.stop, _StopWhen(self.should_stop)), sleep=self._sleep)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping() and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(0.1, left))

    def _with_database(self, action: Any, *, cancellable: bool = False, waits_for: str | None = None) -> Any:
        """Run ``action(conn)`` with retries on transient faults; DatabaseUnavailable at the end.

        Whatever ``action`` raises, the connection ends outside a transaction (rolled back or
        discarded): a failed step never poisons the next. ``cancellable``: a stop request may
        cancel the statement in flight (``cancel_statements``); the step then ends with
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
                        self._lock_timed_out("load", waits_for or "the pipeline's bookkeeping")
                        raise
        except psycopg.Error as exc:
            if cancellable and self._stopping():
                raise PassInterrupted from exc
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                raise LockTimeout(self.lock_problem or _first_line(exc)) from exc
            if is_transient(exc):
                self.metrics.database_up.set(0)
                raise DatabaseUnavailable(f"database unreachable: {str(exc).splitlines()[0]}") from exc
            raise
        raise AssertionError("unreachable")

    def _lock_timed_out(self, step: str, what: str) -> None:
        self.metrics.lock_timeouts.labels(step=step).inc()
        self._lock_step = step
        seconds = self.settings.lock_timeout_seconds
        self.lock_problem = f"a lock wait timed out ({seconds:g} s) {what}; retrying"
        log.warning("lock_timeout", step=step, waited_s=seconds, what=what)

    def cancel_statements(self) -> int:
        """Cancel what the pass waits for in the database now (its load, its dbt build).

        Safe from another thread (the daemon's stop); returns how many statements were asked.
        """
        asked = 1 if self.db.cancel() else 0
        if self.transformer is not None:
            asked += self.transformer.cancel()
        return asked

    def lock_waits(self) -> list[str]:
        """What the pass's statements wait for now (relations, or kinds of lock); from any thread."""
        pids = [pid for pid in (self.db.backend_pid,) if pid is not None]
        if self.transformer is not None:
            pids += self.transformer.backend_pids()
        return lock_waits(self.db.url, pids)

    def manifest_snapshot(self) -> dict[str, ManifestEntry]:
        try:
            entries: list[ManifestEntry] = self._with_database(all_entries, cancellable=True)
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

        ``should_stop`` (default: ``self.should_stop``) is asked before each file and while a
        file streams: once it answers True, no further file starts and the file in flight is
        rolled back (it stays pending). ``rebuild``: raw tables whose models are built even when
        nothing lands.
        """
        should_stop = should_stop or self.should_stop
        started = time.monotonic()
        result = PassResult(trigger)
        bound = log.bind(trigger=trigger)
        try:
            result.run_id = self._with_database(lambda c: runs.open_run(c, trigger, self.settings.instance))
            bound = bound.bind(run_id=result.run_id)
            self.metrics.database_up.set(1)
            self._load_all(candidates, result, bound, json_output, force, should_stop)
            self._build(result, bound, drop_times or {}, set(rebuild), should_stop)
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
            # starts on a clean connection (``_with_database`` rolled this one back).
            result.infrastructure_error = f"database error: {_first_line(exc)}"
            bound.error("pass_failed", step="pass", status="failed", error=result.infrastructure_error)
        if should_stop is not None and should_stop() and result.infrastructure_error:
            result.interrupted = True  # retries ended by the stop request, not given up
        if self._lock_step == "load" and not result.infrastructure_error and not result.interrupted:
            self._lock_step = self.lock_problem = None  # the loads got through
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
            log.warning("run_not_recorded", run_id=result.run_id, error=_first_line(exc))

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
            grouped: GroupResult = self._with_database(action, cancellable=True, waits_for=what)
        except psycopg.Error as exc:
            # A permanent database error in the group (say, disk full): each file alone, so that
            # the one it comes from is the one that gets it as its answer.
            self.db.close()
            log.warning("group_load_failed", step="load", files=len(group), error=_first_line(exc))
            return GroupResult(alone=list(group))
        return grouped

    def _ignore_all(self, unrouted: list[Candidate], result: PassResult, bound: Any) -> None:
        try:
            outcomes: list[FileOutcome] = self._with_database(lambda c: record_ignored(c, unrouted))
        except psycopg.Error as exc:  # not recorded: they come back at the next scan
            self.db.close()
            bound.error(
                "files_ignored_not_recorded", step="load", files=len(unrouted), error=_first_line(exc)
            )
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
            outcome: FileOutcome = self._with_database(action, cancellable=True, waits_for=what)
        except psycopg.Error as exc:
            # A permanent database error on this file (say, disk full): record and go on.
            self.db.close()
            outcome = FileOutcome(candidate.relative, "failed", reason=f"database error: {_first_line(exc)}")
            self._record_failure(candidate, outcome)
        return outcome

    def _record_failure(self, candidate: Candidate, outcome: FileOutcome) -> None:
        try:
            self._with_database(lambda conn: record_failed(conn, candidate, outcome.reason or "failed"))
        except psycopg.Error as exc:
            log.error("failure_not_recorded", path=outcome.relative, error=_first_line(exc))

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

    def _stale_tables(self, *, all_loaded: bool = False) -> set[str]:
        """Raw tables with loads newer than the last successful build (say, after a crash or
        --no-dbt); with ``all_loaded``, every raw table that has a load."""

        def query(conn: psycopg.Connection[Any]) -> set[str]:
            rows = conn.execute(
                """SELECT DISTINCT target_table FROM ops.file_loads
                   WHERE %s OR finished_at > coalesce(
                       (SELECT max(finished_at) FROM ops.pipeline_runs WHERE dbt_status = 'success'),
                       '-infinity')""",
                (all_loaded,),
            ).fetchall()
            conn.rollback()
            return {str(r[0]) for r in rows}

        result: set[str] = self._with_database(query)
        return result

    def _wants_build(self) -> bool:
        return self.settings.run_dbt and self.transformer is not None and self.transformer.available

    @staticmethod
    def _models_missing(transformer: Transformer) -> bool:
        from watcher.transform import TransformUnavailable

        try:
            return transformer.models_missing()
        except TransformUnavailable as exc:
            log.warning("dbt_unavailable", step="startup", error=str(exc))
            return False

    def catch_up(self) -> PassResult | None:
        """One build for data loaded but never built (a crash between load and build), or whose
        models are missing (an upgrade dropped them); else nothing."""
        if not self._wants_build():
            return None
        tables = self._stale_tables()
        if self.transformer is not None and self._models_missing(self.transformer):
            tables |= self._stale_tables(all_loaded=True)
        if not tables:
            return None
        return self.run_pass([], "startup", rebuild=tables)

    def _build(
        self,
        result: PassResult,
        bound: Any,
        drop_times: Mapping[str, DropTimes],
        rebuild: set[str],
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        changed = {o.table for o in result.outcomes if o.outcome in LOADING_OUTCOMES and o.table} | rebuild
        if not self.settings.run_dbt or self.transformer is None:
            return
        if changed or not result.outcomes:
            changed |= self._stale_tables() if self.transformer.available else set()
        if not changed:
            return
        if not self.transformer.available:
            bound.info(
                "dbt_skipped", step="dbt", reason="no dbt project", project=str(self.transformer.project_dir)
            )
            return

        def models_built(build: BuildResult) -> None:
            """The models are built (with ``gate``: and tested): the drops are ready.

            The last-successful-build time waits for the data tests in both modes: the
            WearableDbtBuildFailing alert compares it with the last load to catch failing tests.
            """
            now = time.time()
            for o in result.outcomes:
                times = drop_times.get(o.relative) if o.outcome == "loaded" else None
                if times is not None:
                    self.metrics.drop_to_ready.observe(max(0.0, now - times.first_seen))
                    if math.isfinite(times.settled):
                        self.metrics.settled_to_ready.observe(max(0.0, now - times.settled))
            bound.info(
                "dbt_models_built",
                step="dbt",
                tests=build.tests,
                duration_ms=round((build.models_duration_s or 0.0) * 1000),
                nodes=len(build.nodes),
            )

        from watcher.transform import TransformUnavailable

        stopping = should_stop or (lambda: False)
        try:
            build = self._build_retrying(self.transformer, changed, models_built, bound, stopping)
        except TransformUnavailable as exc:
            result.build_error = str(exc)
            result.interrupted = result.interrupted or stopping()
            self.last_build_failed = True
            self.build_retry_wanted = exc.transient
            bound.error("dbt_build_failed", step="dbt", status="unavailable", error=str(exc))
            return
        result.build = build
        if self._lock_step == "dbt" and not build.lock_timeouts():
            self._lock_step = self.lock_problem = None  # the last attempt waited for no lock in vain
        self.last_build_failed = build.status != "success"
        self.build_retry_wanted = build.transient_fault() is not None
        if build.status != "success" and stopping():
            result.interrupted = True  # its statements were cancelled, or its retries cut short
        if build.status == "success":
            self.metrics.last_build.set_to_current_time()
            bound.info(
                "dbt_build_succeeded",
                step="dbt",
                status="success",
                tests=build.tests,
                duration_ms=round(build.duration_s * 1000),
                selectors=list(build.selectors),
                nodes=len(build.nodes),
            )
        else:
            bound.error(
                "dbt_build_failed",
                step="dbt",
                status="error",
                tests=build.tests,
                duration_ms=round(build.duration_s * 1000),
                failures=build.summary(),
            )

    def _build_retrying(
        self,
        transformer: Transformer,
        tables: set[str],
        models_built: Callable[[BuildResult], None],
        bound: Any,
        stopping: Callable[[], bool],
    ) -> BuildResult:
        """``transformer.build``, again while it fails on a transient fault only (a connection
        cut, the server restarting, a lock timeout), as loads are retried: the same time budget
        (``WEARABLE_RETRY_SECONDS``) and back-off. Each attempt is counted and timed."""
        from watcher.transform import TransformUnavailable, transient_line

        def attempt() -> BuildResult:
            try:
                build = transformer.build(tables, on_models_built=models_built)
            except TransformUnavailable:
                self.metrics.dbt_builds.labels(status="error").inc()
                raise
            self.metrics.dbt_builds.labels(status=build.status).inc()
            self.metrics.dbt_build_duration.observe(build.duration_s)
            for node in build.lock_timeouts():
                self._lock_timed_out("dbt", f"in dbt ({node})")
            return build

        def transient(outcome: BuildResult) -> bool:
            return outcome.transient_fault() is not None

        def before_sleep(state: RetryCallState) -> None:
            outcome = state.outcome
            failed = outcome.exception() if outcome is not None and outcome.failed else None
            fault: str | None
            if failed is not None:
                fault = transient_line(str(failed)) or _first_line(failed)
            else:
                fault = outcome.result().transient_fault() if outcome is not None else None
            bound.warning(
                "dbt_build_retrying",
                step="dbt",
                attempt=state.attempt_number,
                wait_s=round(state.upcoming_sleep, 2),
                fault=fault[:300] if fault else None,
            )

        def last_outcome(state: RetryCallState) -> BuildResult:
            assert state.outcome is not None
            return state.outcome.result()  # type: ignore[no-any-return]  # re-raises an exception

        policy = Retrying(
            retry=retry_if_result(transient)
            | retry_if_exception(lambda exc: isinstance(exc, TransformUnavailable) and exc.transient),
            stop=stop_any(stop_after_delay(self.settings.retry_total_seconds), _StopWhen(stopping)),
            wait=wait_random_exponential(multiplier=0.25, max=self.settings.retry_max_wait_seconds),
            sleep=self._sleep,
            before_sleep=before_sleep,
            retry_error_callback=last_outcome,
        )
        build: BuildResult = policy(attempt)
        return build

    def retry_build(self) -> PassResult | None:
        """Build again what a build that failed on a transient fault left stale (the daemon's
        backstop tick); nothing when nothing is stale."""
        if not self._wants_build():
            self.build_retry_wanted = False
            return None
        tables = self._stale_tables()  # on an error the wish stays, for the next tick
        if not tables:
            self.build_retry_wanted = False
            return None
        return self.run_pass([], "reconcile", rebuild=tables)

    def _close_run(self, result: PassResult, bound: Any) -> None:
        self.metrics.runs.labels(trigger=result.trigger, status=result.status).inc()
        if result.run_id is not None:
            try:
                self._with_database(lambda c: runs.close_run(c, result.run_id, result.totals()))
            except (DatabaseUnavailable, psycopg.Error) as exc:
                bound.error("run_not_recorded", error=_first_line(exc))
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

    def warm_up(self) -> None:
        """Parse the dbt project now, so that the first build after a start is as quick as the next.

        Safe to call from another thread than the builds' own.
        """
        if self.transformer is None or not self.settings.run_dbt or not self.transformer.available:
            return
        from watcher.transform import TransformUnavailable

        started = time.monotonic()
        try:
            self.transformer.warm()  # a build meanwhile waits for this parse, not a second one
        except TransformUnavailable as exc:
            log.warning("dbt_warm_up_failed", step="dbt", error=str(exc))
            return
        log.info("dbt_warmed_up", step="dbt", duration_ms=round((time.monotonic() - started) * 1000))

    def close(self) -> None:
        self.db.close()


class _StopWhen(stop_base):
    """A tenacity stop condition: the owner asked to stop."""

    def __init__(self, check: Callable[[], bool]) -> None:
        self.check = check

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.check()


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
