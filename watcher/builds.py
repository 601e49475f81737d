"""The dbt side of a pass: which raw tables to build, the build with its retries, its logs and metrics.

watcher.transform (dbt's side) is imported only where a transformer is at work: a pass without
dbt never loads it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
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

from watcher.config import Settings
from watcher.database_steps import DatabaseSteps
from watcher.errortext import first_line
from watcher.landing.readiness import DropTimes
from watcher.lock_timeouts import LockTimeouts
from watcher.metrics import Metrics
from watcher.pass_result import LOADING_OUTCOMES, PassResult
from watcher.retry import transient_line
from watcher.stopping import StopRequest, StopWhen

if TYPE_CHECKING:
    from watcher.transform import BuildResult, Transformer

log = structlog.get_logger(__name__)


class Builds:
    """Builds the models downstream of what a pass loaded (or left stale), with ``transformer``."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        transformer: Transformer | None,
        steps: DatabaseSteps,
        locks: LockTimeouts,
        stop: StopRequest,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.transformer = transformer
        self.steps = steps
        self.locks = locks
        self.stop = stop
        self.last_failed = False
        """The last build did not succeed (for /readyz)."""
        self.retry_wanted = False
        """The last build failed on a transient fault: the daemon tries it again at its backstop tick."""

    def stale_tables(self, *, all_loaded: bool = False) -> set[str]:
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

        result: set[str] = self.steps.run(query)
        return result

    def _wanted(self) -> bool:
        return self.settings.run_dbt and self.transformer is not None and self.transformer.available

    @staticmethod
    def _models_missing(transformer: Transformer) -> bool:
        from watcher.transform import TransformUnavailable

        try:
            return transformer.models_missing()
        except TransformUnavailable as exc:
            log.warning("dbt_unavailable", step="startup", error=str(exc))
            return False

    def catch_up_tables(self) -> set[str]:
        """The raw tables loaded but never built (a crash between load and build), all of them
        when some model is missing (an upgrade dropped it); none when no build is wanted."""
        if not self._wanted():
            return set()
        tables = self.stale_tables()
        if self.transformer is not None and self._models_missing(self.transformer):
            tables |= self.stale_tables(all_loaded=True)
        return tables

    def retry_tables(self) -> set[str]:
        """What a build that failed on a transient fault left stale; none ends the wish to retry."""
        if not self._wanted():
            self.retry_wanted = False
            return set()
        tables = self.stale_tables()  # on an error the wish stays, for the next tick
        if not tables:
            self.retry_wanted = False
        return tables

    def build(
        self,
        result: PassResult,
        bound: Any,
        drop_times: Mapping[str, DropTimes],
        rebuild: set[str],
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """One build of what the pass loaded, ``rebuild`` and what is stale; into ``result``."""
        changed = {o.table for o in result.outcomes if o.outcome in LOADING_OUTCOMES and o.table} | rebuild
        if not self.settings.run_dbt or self.transformer is None:
            return
        if changed or not result.outcomes:
            changed |= self.stale_tables() if self.transformer.available else set()
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
            self.last_failed = True
            self.retry_wanted = exc.transient
            bound.error("dbt_build_failed", step="dbt", status="unavailable", error=str(exc))
            return
        result.build = build
        if not build.lock_timeouts():
            self.locks.got_through("dbt")  # the last attempt waited for no lock in vain
        self.last_failed = build.status != "success"
        self.retry_wanted = build.transient_fault() is not None
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
        from watcher.transform import TransformUnavailable

        def attempt() -> BuildResult:
            try:
                build = transformer.build(tables, on_models_built=models_built)
            except TransformUnavailable:
                self.metrics.dbt_builds.labels(status="error").inc()
                raise
            self.metrics.dbt_builds.labels(status=build.status).inc()
            self.metrics.dbt_build_duration.observe(build.duration_s)
            for node in build.lock_timeouts():
                self.locks.timed_out("dbt", f"in dbt ({node})")
            return build

        def transient(outcome: BuildResult) -> bool:
            return outcome.transient_fault() is not None

        def before_sleep(state: RetryCallState) -> None:
            outcome = state.outcome
            failed = outcome.exception() if outcome is not None and outcome.failed else None
            fault: str | None
            if failed is not None:
                fault = transient_line(str(failed)) or first_line(failed)
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
            stop=stop_any(stop_after_delay(self.settings.retry_total_seconds), StopWhen(stopping)),
            wait=wait_random_exponential(multiplier=0.25, max=self.settings.retry_max_wait_seconds),
            sleep=self.stop.sleep,
            before_sleep=before_sleep,
            retry_error_callback=last_outcome,
        )
        build: BuildResult = policy(attempt)
        return build

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

    def cancel(self) -> int:
        """Cancel dbt's statements now (from any thread); how many were asked."""
        return self.transformer.cancel() if self.transformer is not None else 0

    def backend_pids(self) -> list[int]:
        """The server processes of dbt's open connections."""
        return self.transformer.backend_pids() if self.transformer is not None else []
