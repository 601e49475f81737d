"""How fresh the answer is: the newest loaded file and the last good dbt build.

``report`` starts with this line, so that a reader knows what the numbers stand on, and whether
files loaded since the last good build are still missing from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg


@dataclass(frozen=True)
class DataAsOf:
    newest_file: str | None
    newest_file_loaded_at: datetime | None
    last_good_build_at: datetime | None
    last_good_build_run: int | None
    files_loaded_since_build: int
    """Loads committed after the last good build finished: not in the models yet."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "newest_file": self.newest_file,
            "newest_file_loaded_at": _iso(self.newest_file_loaded_at),
            "last_good_build_at": _iso(self.last_good_build_at),
            "last_good_build_run": self.last_good_build_run,
            "files_loaded_since_build": self.files_loaded_since_build,
        }

    def line(self) -> str:
        if self.newest_file is None:
            return "Data as of: no file loaded yet."
        text = f"Data as of {_when(self.newest_file_loaded_at)}: newest file {self.newest_file};" + (
            f" last good build {_when(self.last_good_build_at)} (run #{self.last_good_build_run})."
            if self.last_good_build_at is not None
            else " no good build yet."
        )
        if self.last_good_build_at is not None and self.files_loaded_since_build:
            text += f" {self.files_loaded_since_build} file(s) loaded since are not in these numbers yet."
        return text


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def data_as_of(conn: psycopg.Connection[Any]) -> DataAsOf:
    with conn.transaction():
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        newest = conn.execute(
            """SELECT source_path, coalesce(finished_at, started_at) FROM ops.file_loads
               ORDER BY coalesce(finished_at, started_at) DESC, load_id DESC LIMIT 1"""
        ).fetchone()
        build = conn.execute(
            """SELECT run_id, finished_at FROM ops.pipeline_runs
               WHERE dbt_status = 'success' AND finished_at IS NOT NULL
               ORDER BY finished_at DESC LIMIT 1"""
        ).fetchone()
        since = conn.execute(
            "SELECT count(*) FROM ops.file_loads WHERE coalesce(finished_at, started_at) > %s",
            (build[1] if build else None,),
        ).fetchone()
    return DataAsOf(
        newest_file=newest[0] if newest else None,
        newest_file_loaded_at=newest[1] if newest else None,
        last_good_build_at=build[1] if build else None,
        last_good_build_run=int(build[0]) if build else None,
        files_loaded_since_build=int(since[0]) if since and build else 0,
    )
