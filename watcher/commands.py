"""The subcommands that talk to the database: watch, status, report, reprocess."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

import psycopg
import structlog

from watcher import manifest, runs, summary
from watcher.config import Settings
from watcher.database import (
    apply_migrations,
    connect,
    connection_error_text,
    connection_hint,
    current_database,
    database_url,
)
from watcher.landing import open_zone
from watcher.landing.readiness import ONCE_SETTLE_WINDOWS, Rules, wait_until_settled
from watcher.landing.zone import Candidate
from watcher.metrics import Metrics, unrecorded
from watcher.pass_result import EXIT_INFRASTRUCTURE, EXIT_USAGE
from watcher.pipeline import Pipeline
from watcher.retry import is_transient, transient_retrying
from watcher.routes import route_for

if TYPE_CHECKING:
    from watcher.transform import Transformer

# Imported where used, not here: what a `watch --once --no-dbt` process does not need (dbt's
# wrapper, the status queries) stays out of its start-up.

log = structlog.get_logger(__name__)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """Start (or reach) the database, migrate it, and run the chosen subcommand."""
    # A stop request or a hang-up of the terminal: the embedded server is stopped on the way out.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        with database_url(settings) as url:
            try:
                for attempt in transient_retrying(
                    settings.retry_total_seconds, settings.retry_max_wait_seconds
                ):
                    with attempt, connect(url, autocommit=True) as conn:
                        dbname = current_database(conn)
                        if (refusal := _dbt_refusal(args, settings, dbname)) is not None:
                            return refusal
                        apply_migrations(conn)
            except psycopg.OperationalError as exc:
                if not is_transient(exc):
                    # A wrong setting (database, role, password, TLS): answered at once.
                    log.error(
                        "database_refused",
                        database=settings.redacted_database(),
                        error=connection_error_text(exc),
                        hint=connection_hint(exc),
                    )
                    return EXIT_USAGE
                log.error(
                    "database_unreachable",
                    database=settings.redacted_database(),
                    error=connection_error_text(exc),
                    retried_s=settings.retry_total_seconds,
                )
                return EXIT_INFRASTRUCTURE
            return _dispatch(args, settings, url)
    except KeyboardInterrupt:
        return 130


def _dbt_refusal(args: argparse.Namespace, settings: Settings, dbname: str) -> int | None:
    """EXIT_USAGE when dbt is to build in a database whose name it cannot take; else None."""
    if args.command not in ("watch", "reprocess") or not settings.run_dbt:
        return None
    from watcher.libpq_env import dbt_cannot_use_database

    reason = dbt_cannot_use_database(dbname)
    if reason is None:
        return None
    log.error(
        "database_name_unsupported",
        database=settings.redacted_database(),
        reason=reason,
        hint="rename the database (ALTER DATABASE ... RENAME TO ...), or load only with --no-dbt",
    )
    return EXIT_USAGE


def _dispatch(args: argparse.Namespace, settings: Settings, url: str) -> int:
    if args.command == "status":
        return _status(url, args.json, args.runs)
    if args.command == "report":
        from watcher.report import run_report

        return run_report(url, as_json=args.json, plot_path=args.plot, limit=args.limit)
    if args.command == "reprocess":
        return _reprocess(args, settings, url)
    if args.command == "sql":
        from watcher.sql_shell import open_psql

        return open_psql(url, embedded=settings.database_url is None)
    if args.once:
        return _once(settings, url, args.json)
    from watcher.daemon import run_daemon

    return run_daemon(settings, url)


def make_pipeline(settings: Settings, url: str, metrics: Metrics, *, show_progress: bool = False) -> Pipeline:
    transformer: Transformer | None = None
    if settings.run_dbt:
        from watcher.transform import Transformer

        transformer = Transformer(
            settings.dbt_project_dir,
            url,
            threads=settings.dbt_threads,
            tests=settings.dbt_tests,
            lock_timeout_seconds=settings.lock_timeout_seconds,
        )
    return Pipeline(settings, url, metrics, transformer=transformer, show_progress=show_progress)


def _once(settings: Settings, url: str, as_json: bool) -> int:
    """One pass over what the manifest does not know; files still being written stay unread."""
    zone = open_zone(settings)
    pipeline = make_pipeline(settings, url, unrecorded(), show_progress=True)  # no /metrics to serve
    try:
        try:
            listed = list(zone.scan())
        except OSError as exc:  # the bucket did not answer (the folder's scan reports, never raises)
            log.error("landing_zone_unreadable", step="once", landing=zone.url, error=str(exc)[:500])
            return EXIT_INFRASTRUCTURE
        waiting = pipeline.pending(listed)
        ready, changing = _settled_for_once(settings, waiting) if zone.settles else (waiting, [])
        result = pipeline.run_pass(ready, "once", json_output=as_json)
    finally:
        pipeline.close()
    if changing:
        log.warning("files_still_changing", step="once", files=len(changing), paths=changing[:20])
    text = (
        summary.dump_json(summary.pass_as_dict(result, pending=changing))
        if as_json
        else summary.pass_as_text(result, pending=changing)
    )
    print(text)
    return summary.exit_code(result, changing)


def _settled_for_once(settings: Settings, waiting: list[Candidate]) -> tuple[list[Candidate], list[str]]:
    """The daemon's settle rule (``readiness``) on the files this pass would read.

    Entries with a problem and files no route takes are never read: they need no wait. The wait
    is bounded by a few windows; what still changes then is returned by relative path.
    """
    readable = {
        str(c.path): c
        for c in waiting
        if c.problem is None and route_for(os.path.basename(c.relative)) is not None
    }
    window = settings.debounce_seconds
    rules = Rules(window=window, stale_after=window)
    settled, changing = wait_until_settled(readable, rules, ONCE_SETTLE_WINDOWS * window)
    taken = set(settled)
    ready = [c for c in waiting if str(c.path) not in readable or str(c.path) in taken]
    return ready, sorted(readable[p].relative for p in changing)


def _status(url: str, as_json: bool, limit: int) -> int:
    from watcher import quality

    with psycopg.connect(url) as conn:
        entries = manifest.all_entries(conn)
        recent = runs.recent_runs(conn, limit)
        tables = quality.table_quality(conn)
    if as_json:
        print(summary.dump_json(summary.status_as_dict(entries, recent, tables)))
    else:
        print(summary.status_as_text(entries, recent, tables))
    return 0


def _reprocess(args: argparse.Namespace, settings: Settings, url: str) -> int:
    with psycopg.connect(url) as conn:
        entries = {e.source_path: e for e in manifest.all_entries(conn)}
    if args.all_rejected:
        chosen = [p for p, e in entries.items() if e.status in ("rejected", "failed")]
    else:
        chosen = list(args.paths)
    unknown = [p for p in chosen if p not in entries]
    if not chosen or unknown:
        what = f"not in the manifest: {', '.join(unknown)}" if unknown else "name paths or use --all-rejected"
        print(f"wearable-pipeline reprocess: {what}", file=sys.stderr)
        return EXIT_USAGE
    loaded = [p for p in chosen if entries[p].status == "loaded"]
    zone = open_zone(settings)
    candidates = [zone.candidate(p) for p in chosen if p not in loaded]
    pipeline = make_pipeline(settings, url, unrecorded())  # no /metrics to serve
    try:
        result = pipeline.run_pass(candidates, "reprocess", json_output=args.json, force=True)
    finally:
        pipeline.close()
    print(summary.dump_json(summary.pass_as_dict(result)) if args.json else summary.pass_as_text(result))
    return result.exit_code
