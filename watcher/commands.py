"""The subcommands that talk to the database: watch, status, report, reprocess."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

import psycopg
import structlog

from watcher import manifest, runs, summary
from watcher.config import Settings
from watcher.database import database_url, migrate
from watcher.metrics import Metrics
from watcher.pipeline import EXIT_INFRASTRUCTURE, EXIT_USAGE, Pipeline
from watcher.retry import transient_retrying
from watcher.scanner import inspect_entry, scan
from watcher.transform import Transformer

log = structlog.get_logger(__name__)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """Start (or reach) the database, migrate it, and run the chosen subcommand."""
    signal.signal(signal.SIGTERM, _interrupt)  # the embedded server is stopped on the way out
    try:
        with database_url(settings) as url:
            try:
                for attempt in transient_retrying(
                    settings.retry_total_seconds, settings.retry_max_wait_seconds
                ):
                    with attempt:
                        migrate(url)
            except psycopg.OperationalError as exc:
                log.error(
                    "database_unreachable",
                    database=settings.redacted_database(),
                    error=str(exc).splitlines()[0],
                )
                return EXIT_INFRASTRUCTURE
            return _dispatch(args, settings, url)
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings, url: str) -> int:
    if args.command == "status":
        return _status(url, args.json, args.runs)
    if args.command == "report":
        from watcher.report import run_report

        return run_report(url, as_json=args.json, plot_path=args.plot, limit=args.limit)
    if args.command == "reprocess":
        return _reprocess(args, settings, url)
    if args.once:
        return _once(settings, url, args.json)
    from watcher.daemon import run_daemon

    return run_daemon(settings, url)


def make_pipeline(settings: Settings, url: str, *, show_progress: bool = False) -> Pipeline:
    transformer = (
        Transformer(
            settings.dbt_project_dir,
            url,
            threads=settings.dbt_threads,
            tests=settings.dbt_tests,
            lock_timeout_seconds=settings.lock_timeout_seconds,
        )
        if settings.run_dbt
        else None
    )
    return Pipeline(settings, url, Metrics(), transformer=transformer, show_progress=show_progress)


def _once(settings: Settings, url: str, as_json: bool) -> int:
    pipeline = make_pipeline(settings, url, show_progress=True)
    try:
        pending = pipeline.pending(scan(settings.data_dir))
        result = pipeline.run_pass(pending, "once", json_output=as_json)
    finally:
        pipeline.close()
    print(summary.dump_json(summary.pass_as_dict(result)) if as_json else summary.pass_as_text(result))
    return result.exit_code


def _status(url: str, as_json: bool, limit: int) -> int:
    with psycopg.connect(url) as conn:
        entries = manifest.all_entries(conn)
        recent = runs.recent_runs(conn, limit)
    if as_json:
        print(summary.dump_json(summary.status_as_dict(entries, recent)))
    else:
        print(summary.status_as_text(entries, recent))
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
    candidates = [inspect_entry(settings.data_dir, settings.data_dir / p) for p in chosen if p not in loaded]
    pipeline = make_pipeline(settings, url)
    try:
        result = pipeline.run_pass(candidates, "reprocess", json_output=args.json, force=True)
    finally:
        pipeline.close()
    print(summary.dump_json(summary.pass_as_dict(result)) if args.json else summary.pass_as_text(result))
    return result.exit_code
