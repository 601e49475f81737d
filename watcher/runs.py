"""``ops.pipeline_runs``: one row per pass, opened at its start and closed with its totals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

TRIGGERS = ("once", "startup", "event", "reconcile", "reprocess")

WORDS = ("loaded", "duplicate", "ignored", "rejected", "failed", "pending", "unchanged")
"""What became of a file in a pass, in every summary, column, log and metric label.

The first six are also a file's status in ``status``; ``unchanged`` is an already loaded file
found again with the same content (its status stays ``loaded``).
"""
_WORD_OF = {"skipped": "unchanged", "busy": "pending"}


def word(outcome: str) -> str:
    """The vocabulary word for a loader outcome (``skipped`` → ``unchanged``, ``busy`` → ``pending``)."""
    return _WORD_OF.get(outcome, outcome)


def count_words(outcomes: Iterable[str]) -> dict[str, int]:
    """Files per word, every word present (0 when none)."""
    counts = Counter(word(o) for o in outcomes)
    return {w: counts[w] for w in WORDS}


@dataclass(frozen=True)
class RunTotals:
    status: str
    files: Mapping[str, int]
    """Files per vocabulary word (``count_words``)."""
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
    file_columns = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(f"files_{w}"), sql.Placeholder()) for w in WORDS
    )
    statement = sql.SQL(
        """UPDATE ops.pipeline_runs SET finished_at = clock_timestamp(), status = %s, {},
               rows_loaded = %s, rows_rejected = %s, dbt_status = %s, error_summary = %s
           WHERE run_id = %s"""
    ).format(file_columns)
    with conn.transaction():
        conn.execute(
            statement,
            (
                totals.status,
                *(totals.files.get(w, 0) for w in WORDS),
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
                      files_duplicate, files_ignored, files_rejected, files_failed, files_pending,
                      files_unchanged, rows_loaded, rows_rejected, dbt_status, error_summary
               FROM ops.pipeline_runs ORDER BY run_id DESC LIMIT %s""",
            (limit,),
        ).fetchall()
    conn.rollback()
    return rows
