"""Load speed of a file with bad rows (the checked path) against `psql \\copy` of the clean file.

Run: python -m bench.bad_rows [--rows 1000000] [--bad-every 1000] [--repeat 3] [--no-rss]

The same run measures, alternately and on the same server:
  * psql's client-side \\copy of the clean file into a fresh table of the same 15 column types;
  * the pipeline loading the file with bad rows (every ``--bad-every``-th row holds ``n/a`` where a
    number belongs): the fast COPY fails at the first bad line, the checked path loads the good
    rows and records the bad ones in ops.rejected_rows;
  * the pipeline loading the clean file (the fast path), for reference.
Rates are rows loaded per second; the target is a ratio of at least 0.5 to psql's rate.
With --rss (the default) the bad file is also loaded once by the real CLI to report its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import DAILY_COLUMNS, median, psql_binary, scratch_database, server_url, timed, write_daily

COPY_COLUMNS = (
    "id, activity_date, total_steps, total_distance, tracker_distance, logged_activities_distance,"
    " very_active_distance, moderately_active_distance, light_active_distance,"
    " sedentary_active_distance, very_active_minutes, fairly_active_minutes, lightly_active_minutes,"
    " sedentary_minutes, calories"
)


def psql_copy(url: str, path: Path) -> float:
    """Seconds for psql's \\copy of ``path`` into a fresh table of the same column types."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute("CREATE TABLE bench_copy (" + DAILY_COLUMNS + ")")
    command = f"\\copy bench_copy ({COPY_COLUMNS}) FROM '{path}' WITH (FORMAT csv, HEADER true)"
    env = {**os.environ, "PGOPTIONS": "-c DateStyle=ISO,MDY"}
    return timed(
        lambda: subprocess.run(
            [psql_binary(), url, "-v", "ON_ERROR_STOP=1", "-qc", command], check=True, env=env
        )
    )


def pipeline_load(url: str, lake: Path) -> tuple[float, dict[str, Any]]:
    """Seconds for one pass of the pipeline over ``lake`` (one file), in this process."""
    from prometheus_client import CollectorRegistry

    from watcher.config import Overrides, build_settings
    from watcher.database import migrate
    from watcher.metrics import Metrics
    from watcher.pipeline import Pipeline
    from watcher.scanner import scan

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS raw CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS ops CASCADE")
    migrate(url)
    settings = build_settings(
        Overrides(data_dir=str(lake), database_url=url, no_dbt=True, metrics_addr="off")
    )
    pipeline = Pipeline(settings, url, Metrics(CollectorRegistry()))
    try:
        candidates = list(scan(lake))
        started = time.perf_counter()
        result = pipeline.run_pass(candidates, "once")
        elapsed = time.perf_counter() - started
    finally:
        pipeline.close()
    assert result.exit_code == 0 and result.count("loaded") == 1, result.error_summary()
    outcome = result.outcomes[0]
    return elapsed, {"rows_loaded": outcome.rows_loaded, "rows_rejected": outcome.rows_rejected}


def peak_rss_of_cli(url: str, lake: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of the real CLI loading everything in ``lake``."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS raw CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS ops CASCADE")
    env = {**os.environ, "DATABASE_URL": url, "WEARABLE_LOG_FORMAT": "json"}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "watcher", "watch", "--once", "--no-dbt", "--json", "--data-dir", str(lake)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    return elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--bad-every", type=int, default=1000, help="one bad row in this many (1000: 0.1 %%)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-memory run of the CLI")
    args = parser.parse_args()
    from watcher.logsetup import configure_logging

    configure_logging("console", "warning")  # the per-file log lines would drown the figures
    bad_rows = args.rows // args.bad_every
    figures: dict[str, Any] = {"rows": args.rows, "bad_rows": bad_rows}
    with tempfile.TemporaryDirectory(prefix="wp-bench-bad-") as tmp, scratch_database(server_url()) as url:
        clean_lake, bad_lake = Path(tmp) / "clean", Path(tmp) / "bad"
        clean = write_daily(clean_lake / "dailyActivity_clean.csv", args.rows)
        bad = write_daily(bad_lake / "dailyActivity_bad_rows.csv", args.rows, bad_every=args.bad_every)
        figures["file_mb"] = round(bad.stat().st_size / 2**20, 1)
        psql_times, bad_times, clean_times = [], [], []
        detail: dict[str, Any] = {}
        for _ in range(args.repeat):
            psql_times.append(psql_copy(url, clean))
            seconds, detail = pipeline_load(url, bad_lake)
            bad_times.append(seconds)
            clean_times.append(pipeline_load(url, clean_lake)[0])
        assert detail == {"rows_loaded": args.rows - bad_rows, "rows_rejected": bad_rows}, detail
        psql_rate = args.rows / median(psql_times)
        bad_rate = detail["rows_loaded"] / median(bad_times)
        clean_rate = args.rows / median(clean_times)
        figures.update(
            psql_copy_s=[round(t, 3) for t in psql_times],
            bad_file_s=[round(t, 3) for t in bad_times],
            clean_file_s=[round(t, 3) for t in clean_times],
            psql_rows_per_s=round(psql_rate),
            bad_file_rows_per_s=round(bad_rate),
            clean_file_rows_per_s=round(clean_rate),
            ratio_bad_to_psql=round(bad_rate / psql_rate, 3),
            ratio_clean_to_psql=round(clean_rate / psql_rate, 3),
            **detail,
        )
        print(f"{args.rows:,} rows, {figures['file_mb']} MB; {bad_rows:,} bad rows (1 in {args.bad_every:,})")
        print(f"psql \\copy, clean file    : median {median(psql_times):.2f}s  {psql_rate:>10,.0f} rows/s")
        print(
            f"pipeline, file with bad rows: median {median(bad_times):.2f}s  {bad_rate:>10,.0f} rows/s"
            f"  ({detail['rows_loaded']:,} loaded, {detail['rows_rejected']:,} recorded as rejected)"
        )
        print(f"pipeline, clean file (fast): median {median(clean_times):.2f}s  {clean_rate:>10,.0f} rows/s")
        print(f"ratio bad-file pipeline / psql: {figures['ratio_bad_to_psql']:.3f} (target >= 0.5)")
        if not args.no_rss:
            clean.unlink()
            seconds, rss = peak_rss_of_cli(url, bad_lake)
            figures.update(cli_bad_file_s=round(seconds, 2), cli_peak_rss_mb=round(rss, 1))
            print(f"memory: the CLI loaded the file with bad rows in {seconds:.1f}s, peak RSS {rss:.0f} MiB")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
