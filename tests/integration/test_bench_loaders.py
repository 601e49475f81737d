"""The bench's other loaders fill the same table with the same rows: its ratios compare like with like."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from bench.common import DAILY_COLUMNS, DAILY_HEADER, psql_copy, write_daily

pytest.importorskip("duckdb", reason="DuckDB is in the bench extra (pip install -e '.[bench]')")
pytest.importorskip("duckdb_extension_postgres_scanner", reason="the bench extra is not installed")

from bench.duckdb_load import csv_columns, process  # after the skips: it imports DuckDB


def _table_contents(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT * FROM bench_copy ORDER BY 1, 2, 3").fetchall()


def test_the_header_names_take_the_types_of_the_table_columns() -> None:
    columns = csv_columns(DAILY_HEADER, DAILY_COLUMNS)
    assert list(columns) == DAILY_HEADER.split(",")
    assert columns["Id"] == "BIGINT"
    assert columns["ActivityDate"] == "DATE"
    assert columns["TotalDistance"] == "DOUBLE"
    assert columns["Calories"] == "INTEGER"


def test_duckdb_loads_the_rows_psql_loads(tmp_path: Path, pg_admin_url: str) -> None:
    from tests.conftest import scratch_database

    path = write_daily(tmp_path / "dailyActivity_bench.csv", 3000, users=70)
    with scratch_database(pg_admin_url) as url:
        psql_copy(url, path)
        by_psql = _table_contents(url)
    with scratch_database(pg_admin_url) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_copy (" + DAILY_COLUMNS + ")")
        command, env = process(url, path)
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        assert float(done.stdout) > 0  # the INSERT's seconds
        by_duckdb = _table_contents(url)
    assert len(by_psql) == 3000
    assert by_duckdb == by_psql
