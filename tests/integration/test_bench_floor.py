"""The bench's floor (the server's part of a binary load) sends every row of the file, to each
database it is given, from one process that encoded them once."""

from __future__ import annotations

from pathlib import Path

import psycopg

from bench.common import write_daily
from bench.ingest import floor_worker
from watcher.database import migrate


def test_the_floor_loads_every_row_into_each_database(tmp_path: Path, pg_admin_url: str) -> None:
    from tests.conftest import scratch_database

    path = write_daily(tmp_path / "dailyActivity_bench.csv", 3000, users=70)
    with floor_worker(path) as floor:
        for _ in range(2):
            with scratch_database(pg_admin_url) as url:
                migrate(url)
                figures = floor(url)
                with psycopg.connect(url) as conn:
                    rows, first, last, loads = conn.execute(
                        "SELECT count(*), min(_line_number), max(_line_number), count(DISTINCT _load_id)"
                        " FROM raw.daily_activity"
                    ).fetchone() or (0, 0, 0, 0)
            assert (rows, first, last, loads) == (3000, 2, 3001, 1)
            assert figures["s"] > 0
