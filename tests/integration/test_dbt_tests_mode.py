"""When a batch's data tests run (``WEARABLE_DBT_TESTS``): after the models, or as a gate in one build.

Real PostgreSQL, the real dbt project, the daemon and ``--once`` as processes. In both modes a
failing data test fails the batch: ``dbt_status`` error, the builds-by-status metric, ``/readyz``
503 and exit code 1. What differs is what the failure holds back: with ``gate`` the models
downstream of the failing test are skipped; with ``after`` they are built (and the drop counts as
ready) before the tests run. No timing is asserted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.daemon_helpers import DaemonProcess, dbt_available, drop_daily, finished_runs, scalar, wait_until
from tests.dbtkit import DBT_PROJECT_DIR, activity_row, load_file
from tests.helpers import DAILY_HEADER, daily_rows, run_cli, write_csv
from watcher.transform import Transformer, profile_environment

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not dbt_available(), reason="no dbt project"),
]

BAD_USER = 1503960999
RANGE_TEST = "test.wearable.user_daily_activity_values_in_range"


@pytest.fixture(autouse=True)
def _dbt_profile_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Transformer hands dbt its connection through os.environ: put it back after each test."""
    for key in profile_environment("postgresql://localhost/postgres"):
        monkeypatch.setenv(key, os.environ.get(key, ""))
        if os.environ.get(key) == "":
            monkeypatch.delenv(key)


def bad_rows() -> list[str]:
    """Three days of one user, one of them with 150,000 steps: over the range tested on the mart."""
    rows = daily_rows(1, 3, first_id=BAD_USER)
    cells = rows[1].split(",")
    cells[2] = "150000"
    rows[1] = ",".join(cells)
    return rows


def drop_bad(lake: Path, name: str) -> None:
    temporary = write_csv(lake / f"{name}.part", DAILY_HEADER, bad_rows())
    os.replace(temporary, lake / name)


def in_mart(url: str, mart: str, user: int) -> bool:
    query = sql.SQL("SELECT count(*) FROM {} WHERE user_id = %s").format(sql.Identifier("marts", mart))
    with psycopg.connect(url) as conn:
        row = conn.execute(query, (user,)).fetchone()
    return bool(row and row[0])


def runs_with_files(url: str, count: int) -> list[dict[str, Any]]:
    runs = [r for r in finished_runs(url) if r["files_loaded"]]
    return runs if len(runs) == count else []


@pytest.mark.parametrize("mode", ["after", "gate"])
def test_daemon_a_failing_data_test_fails_the_batch_and_readyz(
    mode: str, tmp_path: Path, migrated_url: str
) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    daemon = DaemonProcess(
        lake, migrated_url, tmp_path / "daemon.log", extra_env={"WEARABLE_DBT_TESTS": mode}
    )
    try:
        daemon.start().wait_ready(timeout=90)
        drop_daily(lake, "dailyActivity_good.csv", users=2, days=5)
        good = wait_until(lambda: runs_with_files(migrated_url, 1), timeout=90, message="the first run")
        assert good[0]["dbt_status"] == "success", daemon.log_tail()
        assert daemon.get("/readyz")[0] == 200
        built_at = daemon.metric("wearable_last_successful_build_timestamp_seconds")
        assert built_at > 0
        assert daemon.metric("wearable_drop_to_ready_seconds_count") == 1

        drop_bad(lake, "dailyActivity_bad.csv")
        bad = wait_until(lambda: runs_with_files(migrated_url, 2), timeout=90, message="the second run")[-1]
        assert bad["dbt_status"] == "error"
        assert bad["status"] != "success"
        summary = scalar(
            migrated_url, "SELECT error_summary FROM ops.pipeline_runs WHERE run_id = %s", (bad["run_id"],)
        )
        assert "user_daily_activity_values_in_range" in summary
        assert daemon.get("/readyz") == (503, "the last dbt build failed\n")
        assert daemon.metric("wearable_dbt_builds_total", status="error") == 1
        assert daemon.metric("wearable_dbt_builds_total", status="success") == 1
        # the last successful build is still the first one: the alert on failing builds sees it
        assert daemon.metric("wearable_last_successful_build_timestamp_seconds") == built_at
        assert in_mart(migrated_url, "user_daily_activity", BAD_USER)  # built before its test failed
        if mode == "after":
            # the models below the failing test were built, and the drop was ready before the tests
            assert in_mart(migrated_url, "user_baseline_activity", BAD_USER)
            assert daemon.metric("wearable_drop_to_ready_seconds_count") == 2
        else:
            # dbt build skipped the models below the failing test; the drop never became ready
            assert not in_mart(migrated_url, "user_baseline_activity", BAD_USER)
            assert daemon.metric("wearable_drop_to_ready_seconds_count") == 1

        drop_daily(lake, "dailyActivity_later.csv", users=1, days=4, first_id=1624580081)
        later = wait_until(lambda: runs_with_files(migrated_url, 3), timeout=90, message="the third run")[-1]
        assert later["dbt_status"] == "success", daemon.log_tail()
        wait_until(lambda: daemon.get("/readyz")[0] == 200, timeout=10, message="/readyz to recover")
        assert in_mart(migrated_url, "user_baseline_activity", BAD_USER)
    finally:
        daemon.stop()


def once(lake: Path, url: str, mode: str) -> tuple[int, dict[str, object]]:
    done = run_cli(
        ["watch", "--once", "--json", "--data-dir", str(lake)], url, extra_env={"WEARABLE_DBT_TESTS": mode}
    )
    try:
        return done.returncode, json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"no JSON summary; stderr={done.stderr[-3000:]!r}") from exc


@pytest.mark.parametrize("mode", ["after", "gate"])
def test_once_exits_1_when_a_data_test_fails(mode: str, tmp_path: Path, migrated_url: str) -> None:
    lake = tmp_path / "lake"
    write_csv(lake / "dailyActivity_good.csv", DAILY_HEADER, daily_rows(2, 5))
    code, first = once(lake, migrated_url, mode)
    assert code == 0, first
    assert first["dbt"]["status"] == "success" and first["dbt"]["tests"] == mode  # type: ignore[index]

    write_csv(lake / "dailyActivity_bad.csv", DAILY_HEADER, bad_rows())
    code, second = once(lake, migrated_url, mode)
    assert code == 1, second
    dbt = second["dbt"]
    assert isinstance(dbt, dict)
    assert dbt["status"] == "error"
    assert [f["node"].rsplit(".", 1)[0] for f in dbt["failures"]] == [RANGE_TEST]
    # with "after" every model was built before the tests; with "gate" the ones below were skipped
    assert (dbt["models_duration_s"] is not None) == (mode == "after")
    assert in_mart(migrated_url, "user_baseline_activity", BAD_USER) == (mode == "after")


def test_tests_after_the_models_still_look_at_the_new_loads(migrated_url: str) -> None:
    """The data tests' scope is read before the models rebuild the fingerprints it comes from."""
    transformer = Transformer(DBT_PROJECT_DIR, migrated_url, threads=2, tests="after")
    with psycopg.connect(migrated_url) as conn:
        first = load_file(conn, "daily_activity", "a.csv", [_row(1, day) for day in range(1, 6)])
    built = transformer.build(["daily_activity"])
    assert built.status == "success", built.summary()
    assert built.loads_seen == 0  # no fingerprints yet: every row is tested
    with psycopg.connect(migrated_url) as conn:
        second = load_file(conn, "daily_activity", "b.csv", [_row(2, day) for day in range(1, 6)])
    ready: list[int] = []
    built = transformer.build(["daily_activity"], on_models_built=lambda b: ready.append(len(b.nodes)))
    assert built.status == "success", built.summary()
    assert built.loads_seen == first < second  # the tests look at load `second` only
    models = ready[0]
    assert 0 < models < len(built.nodes)  # told when the models were built, before the tests ran
    assert all(n.unique_id.startswith("model.") for n in built.nodes[:models])
    assert all(n.unique_id.startswith("test.") for n in built.nodes[models:])


def _row(user: int, day: int) -> tuple[object, ...]:
    return activity_row(1700000000 + user, dt.date(2016, 4, day), 5000 + 100 * day)


def test_views_are_built_once_per_process_and_again_when_gone(migrated_url: str) -> None:
    """A view this process built has the manifest's definition: later builds skip it, not its tests."""
    transformer = Transformer(DBT_PROJECT_DIR, migrated_url, threads=2, tests="after")
    view = "model.wearable.stg_daily_activity"
    with psycopg.connect(migrated_url) as conn:
        load_file(conn, "daily_activity", "a.csv", [_row(1, day) for day in range(1, 6)])
    first = transformer.build(["daily_activity"])
    assert first.status == "success", first.summary()
    assert view in {n.unique_id for n in first.nodes}

    with psycopg.connect(migrated_url) as conn:
        load_file(conn, "daily_activity", "b.csv", [_row(2, day) for day in range(1, 6)])
    second = transformer.build(["daily_activity"])
    assert second.status == "success", second.summary()
    built = {n.unique_id for n in second.nodes if n.unique_id.startswith("model.")}
    assert view not in built and "model.wearable.user_daily_activity" in built
    assert any(
        n.unique_id.startswith("test.wearable.not_null_columns_stg_daily_activity") for n in second.nodes
    )
    assert in_mart(migrated_url, "user_daily_activity", 1700000002)

    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("DROP VIEW staging.stg_daily_activity CASCADE")
        load_file(conn, "daily_activity", "c.csv", [_row(3, day) for day in range(1, 6)])
    third = transformer.build(["daily_activity"])
    assert third.status == "success", third.summary()
    assert view in {n.unique_id for n in third.nodes}
    assert in_mart(migrated_url, "user_daily_activity", 1700000003)


def test_a_view_that_reads_a_view_built_again_is_built_again(migrated_url: str) -> None:
    """Building a view again drops the views on it (CASCADE): they are built again in the same build."""
    with psycopg.connect(migrated_url) as conn:
        load_file(conn, "daily_activity", "a.csv", [_row(1, day) for day in range(1, 6)])
        load_file(conn, "sleep", "s.csv", [(1700000001, dt.date(2016, 4, 2), 1, 300, 320)])
    first = Transformer(DBT_PROJECT_DIR, migrated_url, threads=2, tests="after")
    assert first.build(["daily_activity", "sleep"]).status == "success"

    # A second process: its first build, of sleep, builds int_daily_activity_deduplicated (below
    # int_load_extents) but not stg_daily_activity, which that view reads.
    second = Transformer(DBT_PROJECT_DIR, migrated_url, threads=2, tests="after")
    with psycopg.connect(migrated_url) as conn:
        load_file(conn, "sleep", "s2.csv", [(1700000001, dt.date(2016, 4, 3), 1, 310, 330)])
    built = second.build(["sleep"])
    assert built.status == "success", built.summary()
    models = {n.unique_id for n in built.nodes}
    assert "model.wearable.int_daily_activity_deduplicated" in models
    assert "model.wearable.stg_daily_activity" not in models

    with psycopg.connect(migrated_url) as conn:
        load_file(conn, "daily_activity", "b.csv", [_row(2, day) for day in range(1, 6)])
    built = second.build(["daily_activity"])
    assert built.status == "success", built.summary()
    models = {n.unique_id for n in built.nodes}
    assert {"model.wearable.stg_daily_activity", "model.wearable.int_daily_activity_deduplicated"} <= models
    assert in_mart(migrated_url, "user_daily_activity", 1700000002)
