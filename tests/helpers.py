"""Helpers shared by the tests: CSV writers in the Fitbit export's format, and running the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg

DAILY_HEADER = (
    "Id,ActivityDate,TotalSteps,TotalDistance,TrackerDistance,LoggedActivitiesDistance,"
    "VeryActiveDistance,ModeratelyActiveDistance,LightActiveDistance,SedentaryActiveDistance,"
    "VeryActiveMinutes,FairlyActiveMinutes,LightlyActiveMinutes,SedentaryMinutes,Calories"
)
SLEEP_HEADER = "Id,SleepDay,TotalSleepRecords,TotalMinutesAsleep,TotalTimeInBed"


def mdy(day: date) -> str:
    return f"{day.month}/{day.day}/{day.year}"


def daily_rows(
    users: int, days: int, *, start: date = date(2016, 4, 12), first_id: int = 1503960366
) -> list[str]:
    rows = []
    for u in range(users):
        for d in range(days):
            steps = 1000 + 37 * u + 11 * d
            day = start + timedelta(days=d)
            rows.append(
                f"{first_id + u},{mdy(day)},{steps},{steps / 1300:.13f},{steps / 1300:.13f},0,"
                f"1.5,0.5,3.25,0,{u % 60},{d % 30},{200 + u},{900 - u},{1800 + d}"
            )
    return rows


def write_csv(path: Path, header: str, rows: Sequence[str], *, line_end: str = "\r\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((line_end.join([header, *rows]) + line_end).encode("utf-8"))
    return path


def run_cli(
    args: Sequence[str], database_url: str, *, timeout: float = 180, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "WEARABLE_"))}
    env["DATABASE_URL"] = database_url
    env["WEARABLE_LOG_FORMAT"] = "json"
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def once_json(data_dir: Path, database_url: str, *extra: str) -> tuple[int, dict[str, Any]]:
    done = run_cli(["watch", "--once", "--json", "--data-dir", str(data_dir), *extra], database_url)
    try:
        payload = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"no JSON summary; stdout={done.stdout!r} stderr={done.stderr[-3000:]!r}"
        ) from exc
    return done.returncode, payload


def write_big_daily(path: Path, rows: int, *, users: int = 1000) -> Path:
    """A large daily-activity file written quickly (rows spread over ``users`` users)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    start = date(2016, 1, 1)
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(DAILY_HEADER + "\r\n")
        days = [mdy(start + timedelta(days=d)) for d in range(rows // users + 1)]
        chunk = []
        for i in range(rows):
            chunk.append(
                f"{4000000000 + i % users},{days[i // users]},{i % 20000},4.1300001144409,"
                f"4.1300001144409,0,1.5,0.5,2.13000011444092,0,{i % 60},{i % 30},{i % 300},{i % 1000},{1500 + i % 2000}\r\n"
            )
            if len(chunk) >= 10000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))
    return path


def finish_or_dump(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """The child's stdout and stderr once it exits; if it has not exited within ``timeout``,
    fail with every thread's stack (``start_once`` enables faulthandler, which prints them on
    SIGABRT) and the end of its log."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        raise AssertionError(f"the process did not exit within {timeout:.0f} s:\n{err[-8000:]}") from None


def start_once(lake: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    """`watch --once --json --no-dbt` as a child process, for tests that interrupt it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "WEARABLE_"))}
    env.update(DATABASE_URL=url, WEARABLE_LOG_FORMAT="json", PYTHONFAULTHANDLER="1")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "watcher",
            "watch",
            "--once",
            "--json",
            "--no-dbt",
            "--data-dir",
            str(lake),
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )


def wait_for_copy(url: str, proc: subprocess.Popen[Any], deadline_s: float = 60) -> None:
    """Block until a COPY in the database of ``url`` has stored over a thousand rows: the load is
    under way, well before its commit."""
    deadline = time.monotonic() + deadline_s
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT tuples_processed FROM pg_stat_progress_copy p JOIN pg_stat_activity a USING (pid)"
                " WHERE a.datname = current_database() AND p.tuples_processed > 1000"
            ).fetchone()
            if row:
                return
            if proc.poll() is not None:
                raise AssertionError(f"the loader ended before its COPY was seen: {proc.returncode}")
            time.sleep(0.02)
    raise AssertionError("no COPY seen in time")


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT back to its default in the child: a suite started as a shell's background job (or
    by a runner that ignores SIGINT) passes the ignored SIGINT on, and Python then installs no
    Ctrl-C handler: the one-shot run would go on as if no Ctrl-C came."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def settings_for_tests(data_dir: Path, database_url: str) -> Any:
    """Settings as the CLI would build them, for tests that drive the pipeline in-process."""
    from watcher.config import Overrides, build_settings

    return build_settings(Overrides(data_dir=str(data_dir), database_url=database_url, metrics_addr="off"))


RAW_TABLES_BESIDE_THE_ROUTES = (
    "SELECT c.relname, i.inhparent::regclass::text FROM pg_class c"
    " LEFT JOIN pg_inherits i ON i.inhrelid = c.oid"
    " WHERE c.relnamespace = 'raw'::regnamespace AND c.relkind = 'r'"
    " AND c.relname NOT IN ('daily_activity', 'sleep') ORDER BY 1"
)
"""Every other table in schema ``raw`` (the loads' own tables), with the table it is a child of
(None: a table left behind, not attached)."""

DROP_OWN_TABLES = """
DO $$
DECLARE own regclass;
BEGIN
    FOR own IN SELECT c.oid::regclass FROM pg_class c
               WHERE c.relnamespace = 'raw'::regnamespace AND c.relkind = 'r'
                 AND c.relname NOT IN ('daily_activity', 'sleep')
    LOOP
        EXECUTE format('DROP TABLE %s', own);
    END LOOP;
END $$
"""
"""Drop the loads' own tables, for tests that empty the raw tables between loads."""


def own_tables(conn: Any) -> list[tuple[str, str | None]]:
    """The loads' own tables in the database, with the table each is a child of."""
    return [(name, parent) for name, parent in conn.execute(RAW_TABLES_BESIDE_THE_ROUTES).fetchall()]
