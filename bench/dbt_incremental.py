"""Incremental dbt build after a one-user drop, against a full refresh, on a 1,000,000-row history.

Run: python -m bench.dbt_incremental [--database-url URL] [--users 1000] [--days 1000]
     [--own-tables] [--without-brin]

The server is --database-url, else BENCH_DATABASE_URL, else TEST_DATABASE_URL, else an embedded
one. A scratch database (--bench-db) is created on it and dropped at the end (unless --keep).
The history is written straight into raw.* by INSERT ... SELECT (10 files of activity, 2 of sleep,
with their ops.file_loads rows), not through the loader: this measures dbt only.

Measured in the same run, with the project parsed once as the pipeline does:
  1. a first build of everything (not a figure);
  2. a one-user drop, an incremental build and a full refresh, whose marts are compared by a
     per-table checksum (all columns but built_at): they must be identical;
  3. for each variant, --repeat times: a one-user drop (a new load: one more week of one user,
     overlapping his last day), the incremental ``<command> --select source:raw.daily_activity+``
     and the same with ``--full-refresh``, both timed; the ratio of the medians is the figure
     (target <= 25 %). Variants: ``build`` (models, data tests and unit tests, as the pipeline
     runs it), ``build*`` (without unit tests: they check logic on fixed rows, not data, and
     cost the same at any size) and ``run`` (models only).
Every timed build starts after VACUUM ANALYZE, so that autovacuum does not run during it.
``--own-tables`` writes each activity file of the history into a table of its own, attached to
``raw.daily_activity``, as the loader does for files of 32 MiB or more (``watcher.load_tables``): what
the incremental build costs when the history lies in such tables.
``--without-brin`` drops the BRIN indexes on ``_load_id`` before the history is written: the
cost of the incremental path without them (the loads' side of that trade: ``bench/ingest.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.common import bench_server

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_DIR = REPO_ROOT / "dbt"
SELECTOR = "source:raw.daily_activity+"
MARTS = (
    "user_daily_activity",
    "user_baseline_activity",
    "user_activity_deviation",
    "user_weekly_engagement",
    "user_engagement_trend",
    "cohort_weekly_engagement",
    "cohort_daily_engagement",
    "daily_volume_anomaly",
    "user_data_quality",
)
FIRST_USER = 4_000_000_000
START_DATE = "2014-01-01"

# One file of activity: users [first, last] x days [0, days). Steps are pseudo-random (setseed),
# 8 % of days not worn, and every third user slowly declining.
ACTIVITY_INSERT = """
INSERT INTO {table} (
    id, activity_date, total_steps, total_distance, tracker_distance, logged_activities_distance,
    very_active_distance, moderately_active_distance, light_active_distance,
    sedentary_active_distance, very_active_minutes, fairly_active_minutes, lightly_active_minutes,
    sedentary_minutes, calories, _line_number, _load_id)
SELECT id, day, steps, steps / 1300.0, steps / 1300.0, 0, steps / 5200.0, steps / 5200.0,
       steps / 2600.0, 0, very, fairly, light, 1440 - very - fairly - light, 1500 + steps / 20,
       1 + row_number() OVER (), %(load_id)s
FROM (
    SELECT %(first_id)s::bigint + u AS id,
           %(start)s::date + d AS day,
           CASE WHEN random() < 0.08 THEN 0
                ELSE (3000 + random() * 12000
                      * CASE WHEN u %% 3 = 0 THEN 1 - 0.5 * d / %(span)s::float ELSE 1 END)::int
           END AS steps,
           (random() * 60)::int AS very, (random() * 60)::int AS fairly,
           (random() * 300)::int AS light
    FROM generate_series(%(first_user)s::int, %(last_user)s::int) AS u,
         generate_series(%(first_day)s::int, %(last_day)s::int) AS d
) AS generated
"""

SLEEP_INSERT = """
INSERT INTO raw.sleep (id, sleep_day, total_sleep_records, total_minutes_asleep, total_time_in_bed,
                       _line_number, _load_id)
SELECT %(first_id)s::bigint + u, %(start)s::date + d, 1, asleep, asleep + 25,
       1 + row_number() OVER (), %(load_id)s
FROM (SELECT u, d, (300 + random() * 200)::int AS asleep
      FROM generate_series(%(first_user)s::int, %(last_user)s::int) AS u,
           generate_series(%(first_day)s::int, %(last_day)s::int) AS d) AS generated
"""


@dataclass
class Timing:
    label: str
    seconds: float
    nodes: list[tuple[str, float]] = field(default_factory=list)


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


@contextmanager
def scratch_database(admin_url: str, name: str, *, keep: bool) -> Iterator[str]:
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(drop)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_dbname(admin_url, name)
    finally:
        if not keep:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(drop)


def new_load(conn: psycopg.Connection[Any], path: str, table: str) -> int:
    row = conn.execute(
        "INSERT INTO ops.file_loads (source_path, source_sha256, target_table, finished_at)"
        " VALUES (%s, %s, %s, now()) RETURNING load_id",
        (path, f"bench-{path}", table),
    ).fetchone()
    assert row is not None
    return int(row[0])


def load_activity(
    conn: psycopg.Connection[Any],
    path: str,
    users: tuple[int, int],
    days: tuple[int, int],
    span: int,
    *,
    own_table: bool = False,
) -> None:
    """One file of activity, into the raw table or into a table of the load's own (attached to it,
    as the loader does for a large file: ``watcher.load_tables``)."""
    from watcher.load_tables import attach_own_table, create_own_table
    from watcher.routes import DAILY_ACTIVITY

    load_id = new_load(conn, path, "daily_activity")
    with conn.cursor() as cur:
        table = (
            create_own_table(cur, DAILY_ACTIVITY, load_id)
            if own_table
            else sql.Identifier("raw", "daily_activity")
        )
    conn.execute(
        sql.SQL(ACTIVITY_INSERT).format(table=table),
        {
            "load_id": load_id,
            "first_id": FIRST_USER,
            "start": START_DATE,
            "span": span,
            "first_user": users[0],
            "last_user": users[1],
            "first_day": days[0],
            "last_day": days[1],
        },
    )
    if own_table:
        with conn.cursor() as cur:
            attach_own_table(cur, DAILY_ACTIVITY, load_id)


def load_sleep(conn: psycopg.Connection[Any], path: str, users: tuple[int, int], days: int) -> None:
    load_id = new_load(conn, path, "sleep")
    conn.execute(
        SLEEP_INSERT,
        {
            "load_id": load_id,
            "first_id": FIRST_USER,
            "start": START_DATE,
            "first_user": users[0],
            "last_user": users[1],
            "first_day": 0,
            "last_day": days - 1,
        },
    )


def generate_history(url: str, users: int, days: int, files: int, *, own_tables: bool = False) -> int:
    """Write the history into raw.*; return the number of activity rows. With ``own_tables`` each
    activity file of the history goes into a table of its own, as large files do."""
    per_file = max(1, users // files)
    with psycopg.connect(url) as conn:
        conn.execute("SELECT setseed(0.42)")
        for first in range(0, users, per_file):
            last = min(users, first + per_file) - 1
            path = f"history/activity-{first:05d}.csv"
            load_activity(conn, path, (first, last), (0, days - 1), days, own_table=own_tables)
        sleepers = users // 5
        load_sleep(conn, "history/sleep-a.csv", (0, sleepers // 2 - 1), days)
        load_sleep(conn, "history/sleep-b.csv", (sleepers // 2, sleepers - 1), days)
        conn.commit()
    with psycopg.connect(url) as conn:
        count = conn.execute("SELECT count(*) FROM raw.daily_activity").fetchone()
    return int(count[0]) if count else 0


def drop_one_user(url: str, user: int, days: int, tag: str) -> None:
    """A new file for one user: his last day again (overlap) and one more week."""
    with psycopg.connect(url) as conn:
        load_activity(conn, f"drops/{tag}-user-{user}.csv", (user, user), (days - 1, days + 6), days)


def settle(url: str) -> None:
    """VACUUM ANALYZE raw and marts, so that autovacuum does not start during a timed build.

    A full refresh leaves new 1,000,000-row tables that autovacuum would analyze while the next
    build runs; on a small machine that doubles some timings.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables"
            " WHERE schemaname IN ('raw', 'intermediate', 'marts') ORDER BY 1, 2"
        ).fetchall()
        for schema, table in tables:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(schema, table)))


def mart_checksums(url: str) -> dict[str, tuple[int, int]]:
    """Row count and sum of row hashes of each mart, without built_at."""
    query = sql.SQL(
        "SELECT count(*), coalesce(sum(hashtextextended((to_jsonb(t) - 'built_at')::text, 0)), 0)"
        " FROM {} AS t"
    )
    sums: dict[str, tuple[int, int]] = {}
    with psycopg.connect(url) as conn:
        for mart in MARTS:
            row = conn.execute(query.format(sql.Identifier("marts", mart))).fetchone()
            assert row is not None
            sums[mart] = (int(row[0]), int(row[1]))
    return sums


class Dbt:
    """dbt in-process with the project parsed once, as the pipeline runs it."""

    def __init__(self, url: str, target: Path) -> None:
        from dbt.cli.main import dbtRunner
        from dbt.contracts.graph.manifest import Manifest

        self.url = url
        params = conninfo_to_dict(url)
        os.environ.update(
            {
                "WEARABLE_DBT_HOST": str(params.get("host") or "localhost"),
                "WEARABLE_DBT_PORT": str(params.get("port") or "5432"),
                "WEARABLE_DBT_USER": str(params.get("user") or "postgres"),
                "WEARABLE_DBT_PASSWORD": str(params.get("password") or ""),
                "WEARABLE_DBT_DBNAME": str(params.get("dbname")),
            }
        )
        self.base = [
            "--project-dir",
            str(PROJECT_DIR),
            "--profiles-dir",
            str(PROJECT_DIR),
            "--target-path",
            str(target),
            "--log-path",
            str(target / "logs"),
            "--log-level",
            "none",
        ]
        parsed = dbtRunner().invoke(["parse", *self.base])
        if not parsed.success or not isinstance(parsed.result, Manifest):
            raise SystemExit(f"dbt parse failed: {parsed.exception}")
        self.runner = dbtRunner(manifest=parsed.result)

    def invoke(self, label: str, args: Sequence[str]) -> Timing:
        settle(self.url)
        started = time.perf_counter()
        outcome = self.runner.invoke([*args, *self.base])
        seconds = time.perf_counter() - started
        if not outcome.success:
            raise SystemExit(f"dbt {' '.join(args)} failed: {outcome.exception}")
        nodes = [
            (str(r.node.name), float(r.execution_time or 0.0)) for r in getattr(outcome.result, "results", [])
        ]
        return Timing(label, seconds, sorted(nodes, key=lambda n: -n[1]))


def compare(label: str, incremental: list[Timing], full: list[Timing]) -> dict[str, float]:
    """Print and return the medians of the incremental and full-refresh timings."""
    inc_s = statistics.median(t.seconds for t in incremental)
    full_s = statistics.median(t.seconds for t in full)
    ratio = inc_s / full_s
    verdict = "meets" if ratio <= 0.25 else "misses"
    runs = f" (median of {len(full)})" if len(full) > 1 else ""
    print(
        f"{label:7s} incremental {inc_s:6.2f} s   full refresh {full_s:6.2f} s"
        f"   ratio {ratio:6.1%}{runs} ({verdict} the 25 % target)"
    )
    for timing in (incremental[0], full[0]):
        top = ", ".join(f"{name} {secs:.2f}" for name, secs in timing.nodes[:3])
        print(f"          {len(timing.nodes)} nodes; slowest in the {timing.label}: {top}")
    return {"incremental_s": inc_s, "full_refresh_s": full_s, "ratio": ratio}


def measure(
    dbt: Dbt, args: argparse.Namespace, command: Sequence[str], users: Sequence[int]
) -> tuple[list[Timing], list[Timing]]:
    """For each user: drop one week of his, time the incremental build, then the full refresh."""
    incremental, full = [], []
    for user in users:
        drop_one_user(dbt.url, user, args.days, f"{command[0]}-{user}")
        incremental.append(dbt.invoke("incremental", [*command, "--select", SELECTOR]))
        full.append(dbt.invoke("full refresh", [*command, "--select", SELECTOR, "--full-refresh"]))
    return incremental, full


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", help="server to use (a scratch database is created)")
    parser.add_argument("--bench-db", default="wearable_bench_dbt", help="scratch database name")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--days", type=int, default=1000)
    parser.add_argument("--files", type=int, default=10, help="activity files of the history")
    parser.add_argument("--repeat", type=int, default=1, help="drops timed per variant (median)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--own-tables",
        action="store_true",
        help="write each activity file of the history into a table of its own, as large files go",
    )
    parser.add_argument(
        "--without-brin",
        action="store_true",
        help="drop the BRIN indexes on _load_id first: what the incremental build costs without them",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from watcher.database import migrate

    target = REPO_ROOT / "bench" / "out" / "dbt-target"
    with (
        bench_server(args.database_url) as server,
        scratch_database(server, args.bench_db, keep=args.keep) as url,
    ):
        migrate(url)
        if args.without_brin:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DROP INDEX raw.daily_activity_load_brin, raw.sleep_load_brin")
            print("without the BRIN indexes on _load_id")
        started = time.perf_counter()
        rows = generate_history(url, args.users, args.days, args.files, own_tables=args.own_tables)
        if args.own_tables:
            print("the history's activity files in tables of their own")
        print(
            f"history: {rows:,} activity rows ({args.users} users x {args.days} days)"
            f" written in {time.perf_counter() - started:.1f} s"
        )
        dbt = Dbt(url, target)
        first = dbt.invoke("first build", ["build"])
        print(f"first build (everything, from empty): {first.seconds:.2f} s")

        drop_one_user(url, args.users // 2, args.days, "check")
        dbt.invoke("incremental", ["build", "--select", SELECTOR])
        after_incremental = mart_checksums(url)
        dbt.invoke("full refresh", ["build", "--select", SELECTOR, "--full-refresh"])
        after_full = mart_checksums(url)

        figures: dict[str, object] = {"activity_rows": rows, "repeat": args.repeat}
        variants = {
            "build": ["build"],
            "build*": ["build", "--exclude-resource-type", "unit_test"],
            "run": ["run"],
        }
        for number, (label, command) in enumerate(variants.items()):
            users = [(7 + 101 * (number * args.repeat + i)) % args.users for i in range(args.repeat)]
            figures[label] = compare(label, *measure(dbt, args, command, users))
        print(
            "build = models, data tests and unit tests (as the pipeline runs it);"
            " build* = without unit tests; run = models only"
        )

    identical = after_incremental == after_full
    print(f"marts after the incremental build identical to the full refresh: {identical}")
    figures["identical"] = identical
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
