from pathlib import Path

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg import sql

from tests.dbtkit import run_dbt
from tests.helpers import DAILY_HEADER, daily_rows, once_json, settings_for_tests, write_csv
from watcher.database import load_migrations, migrate
from watcher.metrics import Metrics
from watcher.pipeline import Pipeline
from watcher.routes import route_for
from watcher.transform import Transformer


def start_up_catch_up(database_url: str, lake: Path) -> None:
    """What a daemon's start does before it watches: build what was loaded but is not built."""
    settings = settings_for_tests(lake, database_url)
    transformer = Transformer(settings.dbt_project_dir, database_url, threads=settings.dbt_threads)
    pipeline = Pipeline(settings, database_url, Metrics(CollectorRegistry()), transformer=transformer)
    try:
        caught_up = pipeline.catch_up()
    finally:
        pipeline.close()
    assert caught_up is not None and caught_up.exit_code == 0, caught_up and caught_up.error_summary()


def test_migrations_apply_once_and_create_the_schemas(database_url: str) -> None:
    first = migrate(database_url)
    second = migrate(database_url)
    assert first == [m.name for m in load_migrations()]
    assert second == []
    with psycopg.connect(database_url) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables"
                " WHERE table_schema IN ('raw', 'ops')"
            )
        }
    assert {"raw.daily_activity", "raw.sleep", "ops.raw_ingest_manifest", "ops.pipeline_runs"} <= tables


@pytest.mark.slow
def test_upgrade_keeps_raw_rows_and_the_next_pass_rebuilds_the_models(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database at migration 1, with rows loaded and models built, then upgraded."""
    first = load_migrations()[:1]
    monkeypatch.setattr("watcher.database.load_migrations", lambda: first)
    assert migrate(database_url) == [first[0].name]
    monkeypatch.undo()
    route = route_for("dailyActivity_old.csv")
    assert route is not None
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in route.columns)
    with psycopg.connect(database_url) as conn:
        # What the first loader did: settings read by the lineage defaults, then COPY.
        row = conn.execute(
            "INSERT INTO ops.file_loads (source_path, source_sha256, target_table, rows_loaded, finished_at)"
            " VALUES ('old/dailyActivity_old.csv', %s, 'daily_activity', 6, now()) RETURNING load_id",
            ("a" * 64,),
        ).fetchone()
        assert row is not None
        conn.execute("SET LOCAL DateStyle = 'ISO, MDY'")
        conn.execute(
            "SELECT set_config('wearable.source_path', 'old/dailyActivity_old.csv', true),"
            " set_config('wearable.load_id', %s, true)",
            (str(row[0]),),
        )
        conn.execute("ALTER SEQUENCE raw.daily_activity_line_seq RESTART WITH 2")
        copy_sql = sql.SQL("COPY raw.daily_activity ({}) FROM STDIN (FORMAT csv)").format(columns)
        with conn.cursor().copy(copy_sql) as copy:
            copy.write("\r\n".join(daily_rows(2, 3)) + "\r\n")
    run_dbt(database_url, ["build"], target_path=tmp_path / "target")
    with psycopg.connect(database_url) as conn:  # the run that built them, as the pipeline records it
        conn.execute(
            "INSERT INTO ops.pipeline_runs (trigger, status, dbt_status, finished_at)"
            " VALUES ('once', 'success', 'success', clock_timestamp())"
        )
    raw_rows = sql.SQL("SELECT {}, _line_number, _load_id FROM raw.daily_activity ORDER BY 16, 17").format(
        columns
    )
    with psycopg.connect(database_url) as conn:
        before = conn.execute(raw_rows).fetchall()

    assert migrate(database_url) == [m.name for m in load_migrations()[1:]]
    with psycopg.connect(database_url) as conn:
        after = conn.execute(raw_rows).fetchall()
        views = conn.execute(
            "SELECT count(*) FROM information_schema.views WHERE table_name = 'stg_daily_activity'"
        ).fetchone()
    assert after == before and len(after) == 6
    assert views == (0,)  # built on the old table, dropped with it

    # The daemon's start-up catch-up rebuilds the missing models although nothing is new.
    start_up_catch_up(database_url, tmp_path / "empty")
    with psycopg.connect(database_url) as conn:
        views = conn.execute(
            "SELECT count(*) FROM information_schema.views WHERE table_name = 'stg_daily_activity'"
        ).fetchone()
    assert views == (1,)

    lake = tmp_path / "lake"
    write_csv(lake / "new" / "dailyActivity_new.csv", DAILY_HEADER, daily_rows(1, 3, first_id=2000000000))
    code, summary = once_json(lake, database_url)
    assert code == 0, summary
    with psycopg.connect(database_url) as conn:
        users = conn.execute("SELECT count(DISTINCT user_id) FROM marts.user_daily_activity").fetchone()
        lineage = conn.execute(
            "SELECT DISTINCT source_path FROM staging.stg_daily_activity ORDER BY 1"
        ).fetchall()
    assert users == (3,)
    assert lineage == [("new/dailyActivity_new.csv",), ("old/dailyActivity_old.csv",)]


@pytest.mark.slow
def test_marts_of_an_older_release_are_rebuilt_by_the_upgrade_without_a_manual_refresh(
    database_url: str, tmp_path: Path
) -> None:
    """A mart built before ``is_complete_day`` existed would fail every incremental build
    (``on_schema_change: fail``); the release's migration drops it and the start rebuilds it."""
    lake = tmp_path / "lake"
    write_csv(lake / "dailyActivity_a.csv", DAILY_HEADER, daily_rows(2, 20))
    code, summary = once_json(lake, database_url)
    assert code == 0, summary
    with psycopg.connect(database_url) as conn:  # as the older release left it: without 0004, an old mart
        conn.execute("DELETE FROM ops.schema_migrations WHERE version = 4")
        conn.execute("ALTER TABLE marts.user_daily_activity DROP COLUMN is_complete_day")

    applied = migrate(database_url)
    assert applied == [m.name for m in load_migrations() if m.version == 4]
    start_up_catch_up(database_url, tmp_path / "empty")

    write_csv(lake / "dailyActivity_b.csv", DAILY_HEADER, daily_rows(1, 5, first_id=2000000000))
    code, summary = once_json(lake, database_url)
    assert code == 0, summary
    with psycopg.connect(database_url) as conn:
        users = conn.execute(
            "SELECT count(DISTINCT user_id) FROM marts.user_daily_activity WHERE is_complete_day IS NOT NULL"
        ).fetchone()
    assert users == (3,)
