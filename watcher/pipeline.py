"""One pass: candidate files in, outcomes out, one dbt build for the batch.

``--once`` is one pass over a scan of the landing zone; the daemon runs the same pass on the
files that settled. There is no second code path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog
from tenacity import RetryCallState, stop_any
from tenacity.stop import stop_base

from watcher import manifest, runs
from watcher.config import Settings
from watcher.database import ConnectionHolder
from watcher.ingest import FileOutcome, LoadLimits, process_file, retry_due, unchanged_since_recorded
from watcher.manifest import ManifestEntry, all_entries
from watcher.metrics import Metrics
from watcher.progress import Progress
from watcher.retry import is_transient, transient_retrying
from watcher.scanner import Candidate
from watcher.transform import BuildResult, Transformer, TransformUnavailable

log = structlog.get_logger(__name__)

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INFRASTRUCTURE = 0, 1, 2, 3
LOADING_OUTCOMES = ("loaded", "duplicate")


class DatabaseUnavailable(RuntimeError):
    """The database stayed unreachable through every retry."""


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
            files_loaded=self.count("loaded"),
            files_skipped=self.count("skipped", "duplicate", "ignored", "busy"),
            files_failed=len(self.failures),
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
        self.db = ConnectionHolder(url)
        self.metrics = metrics
        self.transformer = transformer
        self.show_progress = show_progress
        self.limits = LoadLimits(
            settings.max_line_bytes, settings.error_budget_fraction, settings.error_budget_rows
        )
        self.last_build_failed = False
        self.should_stop: Callable[[], bool] | None = None
        """Set by a long-running owner (the daemon): True ends retries early and stops passes."""

    def _retrying(self) -> Any:
        policy = transient_retrying(
            self.settings.retry_total_seconds,
            self.settings.retry_max_wait_seconds,
            on_retry=lambda _state: self.db.close(),
        )
        if self.should_stop is None or not isinstance(policy.stop, stop_base):
            return policy
        return policy.copy(stop=stop_any(policy.stop, _StopWhen(self.should_stop)))

    def _with_database(self, action: Any) -> Any:
        """Run ``action(conn)`` with retries on transient faults; DatabaseUnavailable at the end."""
        try:
            for attempt in self._retrying():
                with attempt:
                    return action(self.db.get())
        except psycopg.Error as exc:
            if is_transient(exc):
                self.metrics.database_up.set(0)
                raise DatabaseUnavailable(f"database unreachable: {str(exc).splitlines()[0]}") from exc
            raise
        raise AssertionError("unreachable")

    def manifest_snapshot(self) -> dict[str, ManifestEntry]:
        entries: list[ManifestEntry] = self._with_database(all_entries)
        self.db.get().rollback()
        return {e.source_path: e for e in entries}

    def pending(self, candidates: Iterable[Candidate]) -> list[Candidate]:
        """The candidates the manifest does not already know in exactly this version; a file
        that failed only once it changed or its back-off (from the reconcile interval) is over."""
        known = self.manifest_snapshot()
        now, backoff = datetime.now(UTC), self.settings.reconcile_seconds
        waiting = []
        for candidate in candidates:
            if candidate.problem is None:
                try:
                    info = os.stat(candidate.path)
                except OSError:
                    waiting.append(candidate)
                    continue
                entry = known.get(candidate.relative)
                if unchanged_since_recorded(entry, info.st_size, info.st_mtime_ns):
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
        settled_at: Mapping[str, float] | None = None,
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
            self._build(result, bound, settled_at or {}, set(rebuild))
        except DatabaseUnavailable as exc:
            result.infrastructure_error = str(exc)
            bound.error("database_unavailable", step="load", status="failed", error=str(exc))
        result.duration_s = time.monotonic() - started
        self._close_run(result, bound)
        return result

    def _load_all(
        self,
        candidates: list[Candidate],
        result: PassResult,
        bound: Any,
        json_output: bool,
        force: bool,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        sizes = [_size_of(c) for c in candidates]
        enabled = self.show_progress and Progress.wanted(json_output)
        with Progress(len(candidates), sum(sizes), enabled=enabled) as progress:
            for done, candidate in enumerate(candidates):
                try:
                    if should_stop is not None and should_stop():
                        raise PassInterrupted
                    outcome = self._load_one(candidate, result.run_id, progress, force, should_stop)
                except PassInterrupted:
                    bound.warning(
                        "pass_interrupted", step="load", path=candidate.relative, left=len(candidates) - done
                    )
                    return
                result.outcomes.append(outcome)
                progress.file_done(outcome.rows_loaded)
                self._observe(outcome, bound)

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

        try:
            outcome: FileOutcome = self._with_database(action)
        except psycopg.Error as exc:
            # A permanent database error on this file (say, disk full): record and go on.
            self.db.close()
            outcome = FileOutcome(candidate.relative, "failed", reason=f"database error: {_first_line(exc)}")
            self._record_failure(outcome)
        return outcome

    def _record_failure(self, outcome: FileOutcome) -> None:
        def action(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                manifest.upsert_entry(
                    cur, manifest.EntryUpdate(outcome.relative, "failed", error_reason=outcome.reason)
                )

        try:
            self._with_database(action)
        except psycopg.Error as exc:
            log.error("failure_not_recorded", path=outcome.relative, error=_first_line(exc))

    def _observe(self, outcome: FileOutcome, bound: Any) -> None:
        table = outcome.table or "none"
        self.metrics.files_processed.labels(table=table, outcome=outcome.outcome).inc()
        event = {
            "loaded": "file_loaded",
            "skipped": "file_skipped",
            "duplicate": "file_duplicate",
            "rejected": "file_rejected",
            "failed": "file_failed",
            "ignored": "file_ignored",
            "busy": "file_busy",
        }[outcome.outcome]
        level = "warning" if outcome.is_failure else ("debug" if outcome.outcome == "skipped" else "info")
        getattr(bound, level)(
            event,
            step="load",
            status=outcome.outcome,
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
        self, result: PassResult, bound: Any, settled_at: Mapping[str, float], rebuild: set[str]
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
                if o.outcome == "loaded" and o.relative in settled_at:
                    self.metrics.drop_to_ready.observe(max(0.0, now - settled_at[o.relative]))
            bound.info(
                "dbt_models_built",
                step="dbt",
                tests=build.tests,
                duration_ms=round((build.models_duration_s or 0.0) * 1000),
                nodes=len(build.nodes),
            )

        try:
            build = self.transformer.build(changed, on_models_built=models_built)
        except TransformUnavailable as exc:
            result.build_error = str(exc)
            self.last_build_failed = True
            self.metrics.dbt_builds.labels(status="error").inc()
            bound.error("dbt_build_failed", step="dbt", status="unavailable", error=str(exc))
            return
        result.build = build
        self.metrics.dbt_builds.labels(status=build.status).inc()
        self.metrics.dbt_build_duration.observe(build.duration_s)
        self.last_build_failed = build.status != "success"
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

    def _close_run(self, result: PassResult, bound: Any) -> None:
        self.metrics.runs.labels(trigger=result.trigger, status=result.status).inc()
        if result.run_id is not None:
            try:
                self._with_database(lambda c: runs.close_run(c, result.run_id, result.totals()))
            except DatabaseUnavailable as exc:
                bound.error("run_not_recorded", error=str(exc))
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


def _size_of(candidate: Candidate) -> int:
    try:
        return os.stat(candidate.path).st_size
    except OSError:
        return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
