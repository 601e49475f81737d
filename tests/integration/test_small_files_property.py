"""Groups answer as one file at a time does: a property test.

Two passes over a lake of a few paths with a few contents (some the same, one with a header and no
rows, one whose header names no column): one database loads each pass through the pipeline (small
files in groups, the rest alone), the other one file at a time (``process_file``, in name order).
Which of two paths with one content is ``loaded`` and which its ``duplicate`` may differ (a group
loads before the files it hands back); what each path holds and the raw rows of each content may
not, nor any other answer.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from psycopg import sql

from tests.conftest import scratch_database
from tests.dbtkit import DAILY_ACTIVITY_COLUMNS
from tests.helpers import DAILY_HEADER, daily_rows, settings_for_tests
from watcher.database import migrate
from watcher.ingest import LoadLimits, process_file
from watcher.landing.scanner import scan
from watcher.metrics import Metrics
from watcher.pipeline import Pipeline

CONTENTS: tuple[bytes, ...] = (
    *(
        ("\r\n".join([DAILY_HEADER, *daily_rows(1, days, first_id=200)]) + "\r\n").encode()
        for days in (1, 2, 3)
    ),
    (DAILY_HEADER + "\r\n").encode(),  # a header and no rows
    b"Foo,Bar\r\n1,2\r\n",  # no column of the table
)
PATHS = ("dailyActivity_a.csv", "dailyActivity_b.csv", "x/dailyActivity_c.csv", "x/dailyActivity_d.csv")
RESET = "TRUNCATE raw.daily_activity, ops.rejected_rows, ops.raw_ingest_manifest, ops.file_loads, ops.pipeline_runs"
DATA_COLUMNS = sql.SQL(", ").join(sql.Identifier("r", c) for c in DAILY_ACTIVITY_COLUMNS)

Lake = dict[str, int]
lakes = st.dictionaries(st.sampled_from(PATHS), st.integers(0, len(CONTENTS) - 1), min_size=1)


@pytest.fixture(scope="module")
def two_databases(pg_admin_url: str) -> Iterator[tuple[str, str]]:
    with (
        scratch_database(pg_admin_url, prefix="wp_group") as grouped,
        scratch_database(pg_admin_url, prefix="wp_group") as alone,
    ):
        migrate(grouped)
        migrate(alone)
        yield grouped, alone


def what_it_holds(conn: psycopg.Connection[Any]) -> tuple[dict[str, Any], Counter[Any]]:
    """Each path's answer (``loaded`` and ``duplicate`` are both: it holds its content), and the
    raw rows of each content."""
    answers = {}
    for path, status, sha, reason in conn.execute(
        "SELECT source_path, status, source_sha256, error_reason FROM ops.raw_ingest_manifest"
    ):
        answers[path] = ("holds", sha) if status in ("loaded", "duplicate") else (status, sha, reason)
    rows = conn.execute(
        sql.SQL(
            "SELECT l.source_sha256, {} FROM raw.daily_activity AS r JOIN ops.file_loads AS l"
            " ON l.load_id = r._load_id"
        ).format(DATA_COLUMNS)
    ).fetchall()
    conn.rollback()
    return answers, Counter((r[0], tuple(r[1:])) for r in rows)


def write(lake: Path, files: Lake) -> None:
    for relative, content in files.items():
        path = lake / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(CONTENTS[content])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=lakes, second=lakes)
def test_a_group_answers_as_one_file_at_a_time(
    two_databases: tuple[str, str], first: Lake, second: Lake
) -> None:
    grouped_url, alone_url = two_databases
    lake = Path(tempfile.mkdtemp(prefix="lake-"))
    pipeline = Pipeline(settings_for_tests(lake, grouped_url), grouped_url, Metrics(CollectorRegistry()))
    try:
        with psycopg.connect(grouped_url) as grouped, psycopg.connect(alone_url) as alone:
            for conn in (grouped, alone):
                conn.execute(RESET)
                conn.commit()
            for files in (first, second):
                write(lake, files)
                candidates = list(scan(lake))
                pipeline.run_pass(candidates, "once")
                for candidate in candidates:
                    process_file(alone, candidate, run_id=None, limits=LoadLimits())
                    alone.commit()
                assert what_it_holds(grouped) == what_it_holds(alone)
    finally:
        pipeline.close()
        shutil.rmtree(lake, ignore_errors=True)
