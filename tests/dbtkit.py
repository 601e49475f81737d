"""Helpers for the dbt tests: run the project in-process against a database, and fill raw tables.

The helpers load rows the way the pipeline's loader does (one ``ops.file_loads`` row per file
version, lineage columns on every raw row, the old rows deleted when a file is replaced), so the
dbt models can be tested without the loader.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from watcher.load_tables import attach_own_table, create_own_table, remove_load_rows
from watcher.routes import ROUTES
from watcher.transform import profile_environment

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt"

DAILY_ACTIVITY_COLUMNS = (
    "id",
    "activity_date",
    "total_steps",
    "total_distance",
    "tracker_distance",
    "logged_activities_distance",
    "very_active_distance",
    "moderately_active_distance",
    "light_active_distance",
    "sedentary_active_distance",
    "very_active_minutes",
    "fairly_active_minutes",
    "lightly_active_minutes",
    "sedentary_minutes",
    "calories",
)
SLEEP_COLUMNS = ("id", "sleep_day", "total_sleep_records", "total_minutes_asleep", "total_time_in_bed")
COLUMNS = {"daily_activity": DAILY_ACTIVITY_COLUMNS, "sleep": SLEEP_COLUMNS}

MART_KEYS = {
    "user_daily_activity": ("user_id", "activity_date"),
    "user_baseline_activity": ("user_id",),
    "user_activity_deviation": ("user_id", "activity_date"),
    "user_weekly_engagement": ("user_id", "week_number"),
    "user_engagement_trend": ("user_id",),
    "cohort_weekly_engagement": ("week_number",),
    "cohort_daily_engagement": ("activity_date",),
    "daily_volume_anomaly": ("activity_date",),
    "user_data_quality": ("user_id", "raw_table"),
}

_dbt_lock = threading.Lock()  # dbtRunner must never run two invocations at once in one process


def dbt_env(conninfo: str, *, schema: str = "analytics", threads: int = 1) -> dict[str, str]:
    """The WEARABLE_DBT_* variables that dbt/profiles.yml reads, taken from a connection string."""
    return profile_environment(conninfo, schema, threads)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def run_dbt(conninfo: str, args: Sequence[str], *, target_path: Path | None = None) -> Any:
    """Invoke dbt in-process (``dbt <args>``) against ``conninfo``; return the dbtRunnerResult.

    Raises AssertionError with the failing nodes when the invocation did not succeed.
    """
    from dbt.cli.main import dbtRunner

    cli_args = [
        *args,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
    ]
    if target_path is not None:
        cli_args += ["--target-path", str(target_path), "--log-path", str(target_path / "logs")]
    with _dbt_lock, _environment(dbt_env(conninfo)):
        result = dbtRunner().invoke(cli_args)
    if not result.success:
        failures = []
        if result.result is not None and hasattr(result.result, "results"):
            failures = [
                f"{r.node.unique_id}: {r.status}: {r.message}"
                for r in result.result.results
                if str(r.status) not in ("success", "pass", "skipped")
            ]
        raise AssertionError(f"dbt {' '.join(args)} failed: {result.exception} {failures}")
    return result


def load_file(
    conn: psycopg.Connection[Any],
    table: str,
    source_path: str,
    rows: Sequence[Sequence[object]],
    *,
    replaces_load_id: int | None = None,
    own_table: bool = False,
) -> int:
    """Load rows as one version of one file, like the loader: return the new load id.

    With ``replaces_load_id`` the rows of that earlier load are removed in the same transaction.
    With ``own_table`` the rows go into a table of the load's own, as a large file's
    (``watcher.load_tables``).
    """
    route = {r.table: r for r in ROUTES}[table]
    columns = COLUMNS[table]
    with conn.transaction():
        load_id = conn.execute(
            "INSERT INTO ops.file_loads (source_path, source_sha256, target_table, rows_loaded,"
            " replaces_load_id, finished_at) VALUES (%s, %s, %s, %s, %s, now()) RETURNING load_id",
            (source_path, f"sha-{source_path}-{len(rows)}", table, len(rows), replaces_load_id),
        ).fetchone()[0]  # type: ignore[index]
        cur = conn.cursor()
        if replaces_load_id is not None:
            remove_load_rows(cur, table, replaces_load_id)
        target = create_own_table(cur, route, load_id) if own_table else sql.Identifier("raw", table)
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
            target,
            sql.SQL(", ").join(sql.Identifier(c) for c in (*columns, "_line_number", "_load_id")),
        )
        with cur.copy(copy_sql) as copy:
            for line_number, row in enumerate(rows, start=2):
                copy.write_row((*row, line_number, load_id))
        if own_table:
            attach_own_table(cur, route, load_id)
    return int(load_id)


def _date(text: str) -> dt.date:
    """Fitbit dates: ``4/5/2016`` or ``4/12/2016 12:00:00 AM``."""
    return dt.datetime.strptime(text.split(" ", 1)[0], "%m/%d/%Y").date()


def read_daily_activity_csv(path: Path) -> list[tuple[object, ...]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        return [
            (int(r[0]), _date(r[1]), int(r[2]), *(float(v) for v in r[3:10]), *(int(v) for v in r[10:15]))
            for r in reader
        ]


def read_sleep_csv(path: Path) -> list[tuple[object, ...]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        return [(int(r[0]), _date(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in reader]


def load_fitbit(conninfo: str, fitbit_dir: Path) -> None:
    """Load every daily activity and sleep file of the Fitbit export, periods in name order."""
    with psycopg.connect(conninfo) as conn:
        for period in sorted(p for p in fitbit_dir.iterdir() if p.is_dir()):
            activity = period / "dailyActivity_merged.csv"
            sleep = period / "sleepDay_merged.csv"
            if activity.exists():
                rel = f"{period.name}/{activity.name}"
                load_file(conn, "daily_activity", rel, read_daily_activity_csv(activity))
            if sleep.exists():
                load_file(conn, "sleep", f"{period.name}/{sleep.name}", read_sleep_csv(sleep))


def mart_rows(conninfo: str, mart: str) -> list[tuple[object, ...]]:
    """Every row of a mart, without its built_at column, ordered by the mart's key."""
    with psycopg.connect(conninfo) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'marts' AND table_name = %s AND column_name <> 'built_at'"
                " ORDER BY ordinal_position",
                (mart,),
            )
        ]
        query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            sql.Identifier("marts", mart),
            sql.SQL(", ").join(sql.Identifier(c) for c in MART_KEYS[mart]),
        )
        return list(conn.execute(query).fetchall())


def activity_row(
    user: int,
    day: dt.date,
    steps: int,
    *,
    minutes: tuple[int, int, int, int] = (20, 10, 200, 1000),
    calories: int = 2000,
) -> tuple[object, ...]:
    """One raw daily-activity row, in the column order of ``load_file``'s daily_activity table."""
    distance = steps / 1300
    very, fairly, light, sedentary = minutes
    return (
        user,
        day,
        steps,
        distance,
        distance,
        0.0,
        0.0,
        0.0,
        distance,
        0.0,
        very,
        fairly,
        light,
        sedentary,
        calories,
    )
