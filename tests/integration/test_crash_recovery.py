"""A crash or a database restart in the middle of a load loses nothing and duplicates nothing."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import (
    DAILY_HEADER,
    daily_rows,
    once_json,
    own_tables,
    start_once,
    wait_for_copy,
    write_big_daily,
    write_csv,
)
from tests.pg_control import ThrowawayServer
from watcher.load_tables import own_table_name

BIG_ROWS = 600_000


def table_state(url: str) -> tuple[int, int, list[tuple[str, str, int]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT count(*) FROM raw.daily_activity").fetchone()
        distinct = conn.execute(
            "SELECT count(*) FROM (SELECT DISTINCT l.source_path, _line_number FROM raw.daily_activity"
            " JOIN ops.file_loads l ON l.load_id = _load_id) d"
        ).fetchone()
        manifest = conn.execute(
            "SELECT source_path, status, rows_loaded FROM ops.raw_ingest_manifest ORDER BY 1"
        ).fetchall()
    assert rows is not None and distinct is not None
    return rows[0], distinct[0], manifest


@pytest.mark.slow
def test_sigkill_during_copy_then_rerun_gives_exact_counts(tmp_path: Path, database_url: str) -> None:
    lake = tmp_path / "lake"
    write_csv(lake / "a_dailyActivity_small.csv", DAILY_HEADER, daily_rows(2, 5))
    write_big_daily(lake / "b_dailyActivity_big.csv", BIG_ROWS)
    proc = start_once(lake, database_url)
    try:
        from watcher.database import migrate

        migrate(database_url)  # the child migrates too; this only makes the progress query safe
        wait_for_copy(database_url, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    rows, _, manifest = table_state(database_url)
    # The small file committed before the big one started; nothing of the big one is visible,
    # not even the table of its own it was being copied into (over 32 MiB: load_tables).
    assert rows == 10
    assert manifest == [("a_dailyActivity_small.csv", "loaded", 10)]
    with psycopg.connect(database_url) as conn:
        assert own_tables(conn) == []
    code, result = once_json(lake, database_url, "--no-dbt")
    assert code == 0, result
    assert result["counts"] == {"loaded": 1}
    rows, distinct, manifest = table_state(database_url)
    assert rows == distinct == BIG_ROWS + 10
    assert manifest == [
        ("a_dailyActivity_small.csv", "loaded", 10),
        ("b_dailyActivity_big.csv", "loaded", BIG_ROWS),
    ]
    with psycopg.connect(database_url) as conn:
        big: Any = conn.execute(
            "SELECT load_id FROM ops.raw_ingest_manifest WHERE source_path = 'b_dailyActivity_big.csv'"
        ).fetchone()
        assert own_tables(conn) == [(own_table_name("daily_activity", big[0]), "raw.daily_activity")]


@pytest.mark.slow
def test_database_restart_during_a_load_is_retried(tmp_path: Path, throwaway_server: ThrowawayServer) -> None:
    url = throwaway_server.url
    lake = tmp_path / "lake"
    write_big_daily(lake / "dailyActivity_big.csv", BIG_ROWS)
    write_csv(lake / "zz_dailyActivity_small.csv", DAILY_HEADER, daily_rows(2, 5))
    proc = start_once(lake, url)
    try:
        from watcher.database import migrate

        migrate(url)
        wait_for_copy(url, proc)
        throwaway_server.restart(down_s=2.0)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert "transient_fault_retrying" in stderr
    rows, distinct, manifest = table_state(url)
    assert rows == distinct == BIG_ROWS + 10
    assert [m[1] for m in manifest] == ["loaded", "loaded"]
