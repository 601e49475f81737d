"""The bench's floor (the server's part of a binary load) sends every row of the file, to each
database it is given, from one process that encoded them once: into a table of the load's own,
as the pipeline loads a large file, or into the raw table itself."""

from __future__ import annotations

from pathlib import Path

import psycopg

from bench.common import write_daily
from bench.ingest import floor_worker
from tests.helpers import own_tables
from watcher.database import migrate


def test_the_floor_loads_every_row_into_each_database(tmp_path: Path, pg_admin_url: str) -> None:
    from tests.conftest import scratch_database

    path = write_daily(tmp_path / "dailyActivity_bench.csv", 3000, users=70)
    with floor_worker(path) as floor:
        for own_table in (True, False, True):
            with scratch_database(pg_admin_url) as url:
                migrate(url)
                figures = floor(url, own_table)
                with psycopg.connect(url) as conn:
                    rows, first, last, loads = conn.execute(
                        "SELECT count(*), min(_line_number), max(_line_number), count(DISTINCT _load_id)"
                        " FROM raw.daily_activity"
                    ).fetchone() or (0, 0, 0, 0)
                    tables = own_tables(conn)
            assert (rows, first, last, loads) == (3000, 2, 3001, 1)
            assert tables == ([("daily_activity_load_1", "raw.daily_activity")] if own_table else [])
            assert figures["s"] > 0
