"""Command line: parse arguments, build settings, set up logging once, run, return an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from watcher.blas import keep_blas_single_threaded
from watcher.config import (
    ConfigError,
    Overrides,
    build_settings,
    clear_empty_cloud_variables,
    log_settings,
    secrets_to_hide,
)
from watcher.gcfreeze import freeze_loaded_modules
from watcher.logsetup import configure_logging
from watcher.pass_result import EXIT_INFRASTRUCTURE, EXIT_USAGE

log = structlog.get_logger(__name__)

PURPOSE = (
    "Load Fitbit-style CSV exports dropped into a folder into PostgreSQL, exactly once each,"
    " and keep the answer to 'are people keeping up their activity?' up to date."
)
EXIT_CODES = """exit codes:
  0    everything pending loaded (or was unchanged, a duplicate, ignored) and the build passed;
       for the daemon: a clean stop
  1    some file was rejected or failed (the others still loaded), or the dbt build or a test failed,
       or (--once) a file was still being written when its wait ran out: left unread, `pending`
  2    usage or configuration error (also: the metrics address is in use)
  3    infrastructure: the database stayed unreachable through the retries, or dbt could not run
  130  a one-shot pass interrupted (Ctrl-C, SIGTERM or SIGHUP); the daemon exits 0 on those
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection and locations")
    group.add_argument(
        "--data-dir",
        help="landing zone: a folder (default data_lake/) or a bucket URL, s3://BUCKET/PREFIX/, gs://"
        " or az:// (env WEARABLE_DATA_DIR); a bucket's credentials and endpoint come from the cloud's"
        " standard variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL)",
    )
    group.add_argument(
        "--database-url",
        help="PostgreSQL URL (env DATABASE_URL or DB_*); none: embedded server. Other users see a"
        " command line (ps): keep a password in the environment or in --database-url-file",
    )
    group.add_argument(
        "--database-url-file",
        metavar="PATH",
        help="read the PostgreSQL URL from this file, e.g. a Docker secret (env DATABASE_URL_FILE)",
    )
    group.add_argument("--pgdata", help="embedded server's data folder (default .pgdata/)")
    group.add_argument("--dbt-project-dir", help="dbt project (default dbt/)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wearable-pipeline",
        description=PURPOSE,
        epilog="Run 'wearable-pipeline COMMAND --help' for a command's options.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, title="commands", metavar="COMMAND"
    )

    watch = sub.add_parser(
        "watch",
        help="watch the landing zone (or one pass with --once)",
        description="Watch the landing zone: load each settled export once, then build the models.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(watch)
    watch.add_argument("--once", action="store_true", help="load everything pending, build, exit")
    watch.add_argument(
        "--json", action="store_true", help="with --once: print the summary as one JSON document on stdout"
    )
    watch.add_argument(
        "--no-dbt", action="store_true", help="load only; skip the dbt build (env WEARABLE_NO_DBT)"
    )
    watch.add_argument("--polling", action="store_true", help="poll the folder instead of OS events")
    watch.add_argument(
        "--poll-interval",
        type=float,
        help="seconds between two looks at a polled folder (default 1) or a bucket's listing (default 10;"
        " env WEARABLE_POLL_INTERVAL)",
    )
    watch.add_argument("--metrics-addr", help="HOST:PORT for /metrics (default 127.0.0.1:9108; 'off')")
    watch.add_argument("--debounce", type=float, help="seconds a file must stay unchanged (default 1)")
    watch.add_argument("--reconcile-interval", type=float, help="seconds between backstop scans (60)")

    status = sub.add_parser("status", help="files known to the manifest, data quality per table, recent runs")
    _common(status)
    status.add_argument("--json", action="store_true", help="print the status as one JSON document")
    status.add_argument("--runs", type=int, default=10, help="how many recent runs to list (default 10)")

    report = sub.add_parser("report", help="the engagement answer: cohort trend and user classes")
    _common(report)
    report.add_argument("--json", action="store_true", help="print the report as one JSON document")
    report.add_argument("--plot", type=Path, help="also draw the trend into this PNG file")
    report.add_argument("--limit", type=int, default=5, help="how many worst-declining users to list")

    reprocess = sub.add_parser("reprocess", help="load rejected files again (after a fix)")
    _common(reprocess)
    reprocess.add_argument("paths", nargs="*", help="paths relative to the data lake")
    reprocess.add_argument("--all-rejected", action="store_true", help="every rejected or failed file")
    reprocess.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    reprocess.add_argument("--no-dbt", action="store_true", help="load only; skip the dbt build")

    sql_cmd = sub.add_parser(
        "sql",
        help="open psql on the configured database (embedded included)",
        description="Open psql on the configured database; without psql, print how to connect.",
    )
    _common(sql_cmd)

    sample = sub.add_parser(
        "sample-data",
        help="write a deterministic synthetic export (for demos and tests)",
        description="Write a synthetic Fitbit-style export: the same arguments give the same bytes.",
    )
    sample.add_argument("--users", type=int, default=12, help="how many synthetic users (default 12)")
    sample.add_argument("--days", type=int, default=60, help="how many days per user (default 60)")
    sample.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    sample.add_argument("--out", type=Path, required=True, help="folder to write the export folders into")
    return parser


def _overrides(args: argparse.Namespace) -> Overrides:
    return Overrides(
        data_dir=getattr(args, "data_dir", None),
        database_url=getattr(args, "database_url", None),
        database_url_file=getattr(args, "database_url_file", None),
        pgdata_dir=getattr(args, "pgdata", None),
        dbt_project_dir=getattr(args, "dbt_project_dir", None),
        no_dbt=getattr(args, "no_dbt", False),
        metrics_addr=getattr(args, "metrics_addr", None),
        debounce_seconds=getattr(args, "debounce", None),
        reconcile_seconds=getattr(args, "reconcile_interval", None),
        polling=getattr(args, "polling", False),
        poll_interval_seconds=getattr(args, "poll_interval", None),
    )


def main(argv: Sequence[str] | None = None) -> int:
    keep_blas_single_threaded()  # before anything imports numpy
    freeze_loaded_modules()
    args = build_parser().parse_args(argv)
    if args.command == "sample-data":
        from watcher.sample_data import generate

        written = generate(args.out, users=args.users, days=args.days, seed=args.seed)
        for path in written:
            print(path)
        return 0
    try:
        settings = build_settings(_overrides(args))
        fmt, level = log_settings()
    except ConfigError as exc:
        print(f"wearable-pipeline: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(fmt, level, secrets_to_hide(settings))
    if settings.bucket_url is not None and (cleared := clear_empty_cloud_variables()):
        log.debug("empty_cloud_variables_ignored", variables=sorted(cleared))
    if args.command == "watch":
        from watcher.landing import open_zone

        try:
            problem = open_zone(settings).exists()
        except ConfigError as exc:
            problem = f"configuration error: {exc}"
        if problem is not None:
            print(f"wearable-pipeline: {problem}", file=sys.stderr)
            return EXIT_USAGE
    from watcher.commands import run_command

    try:
        return run_command(args, settings)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:  # found only once the command runs (the embedded server's extra)
        print(f"wearable-pipeline: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        log.error("command_crashed", command=args.command, error=type(exc).__name__, detail=str(exc)[:500])
        return EXIT_INFRASTRUCTURE
