"""``ops.pipeline_runs``: one row per pass, opened at its start and closed with its totals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

TRIGGERS = ("once", "startup", "event", "reconcile", "reprocess")


@dataclass(frozen=True)
class RunTotals:
    status: str
    files_loaded: int
    files_skipped: int
    files_failed: int
    rows_loaded: int
    rows_rejected: int
    dbt_status: str | None
    error_summary: str | None


def open_run(conn: psycopg.Connection[Any], trigger: str, instance: str) -> int:
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO ops.pipeline_runs (trigger, instance) VALUES (%s, %s) RETURNING run_id",
            (trigger, instance),
        ).fetchone()
    assert row is not None
    return int(row[0])


def close_run(conn: psycopg.Connection[Any], run_id: int, totals: RunTotals) -> None:
    with conn.transaction():
        conn.execute(
            """UPDATE ops.pipeline_runs SET finished_at = clock_timestamp(), status = %s,
                   files_loaded = %s, files_skipped = %s, files_failed = %s, rows_loaded = %s,
                   rows_rejected = %s, dbt_status = %s, error_summary = %s
               WHERE run_id = %s""",
            (
                totals.status,
                totals.files_loaded,
                totals.files_skipped,
                totals.files_failed,
                totals.rows_loaded,
                totals.rows_rejected,
                totals.dbt_status,
                totals.error_summary,
                run_id,
            ),
        )


def recent_runs(conn: psycopg.Connection[Any], limit: int = 10) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(
            """SELECT run_id, trigger, instance, started_at, finished_at, status, files_loaded,
                      files_skipped, files_failed, rows_loaded, rows_rejected, dbt_status, error_summary
               FROM ops.pipeline_runs ORDER BY run_id DESC LIMIT %s""",
            (limit,),
        ).fetchall()
    conn.rollback()
    return rows
