"""Fault suite, errors that must keep their meaning: permanent connection errors answered at once,
dbt's database message kept whole, a JSON log stream that stays JSON, and database names with quotes.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.conftest import scratch_database, with_dbname
from tests.daemon_helpers import DaemonProcess, daily_rows_loaded, scalar, wait_until, write_daily
from tests.helpers import run_cli, write_big_daily

pytestmark = [pytest.mark.faults]

# Retries of a transient fault would last this long: a permanent error must not wait for it.
RETRY_ENV = {"WEARABLE_RETRY_SECONDS": "5"}


def json_lines(stderr: str) -> list[dict[str, object]]:
    """Every line of a JSON-mode stderr, parsed; AssertionError naming the first that is not JSON."""
    parsed = []
    for line in stderr.splitlines():
        if not line.strip():
            continue
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"a stderr line is not JSON: {line!r}") from exc
    return parsed


def refused(stderr: str) -> dict[str, object]:
    events = json_lines(stderr)
    assert not [e for e in events if e.get("event") == "transient_fault_retrying"], stderr
    found = [e for e in events if e.get("event") == "database_refused"]
    assert found, stderr
    return found[0]


def with_user(url: str, user: str, password: str | None = None) -> str:
    params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    params["user"] = user
    params.pop("password", None)
    if password is not None:
        params["password"] = password
    return make_conninfo(**params)


# -- item 11: permanent connection errors -----------------------------------------------------------


@pytest.mark.parametrize("command", ["status", "report", "watch"])
def test_a_database_that_does_not_exist_is_answered_at_once(
    command: str, pg_admin_url: str, tmp_path: Path
) -> None:
    missing = f"wp_missing_{uuid.uuid4().hex[:8]}"
    args = [command, "--database-url", with_dbname(pg_admin_url, missing)]
    if command == "watch":
        args += ["--once", "--data-dir", str(tmp_path)]
    done = run_cli(args, "", timeout=60, extra_env=RETRY_ENV)
    assert done.returncode == 2, done.stderr
    event = refused(done.stderr)
    assert missing in str(event["error"]) and "does not exist" in str(event["error"])
    assert "database" in str(event["hint"])


def test_an_unknown_role_is_answered_at_once(database_url: str) -> None:
    ghost = f"wp_ghost_{uuid.uuid4().hex[:8]}"
    done = run_cli(["status"], with_user(database_url, ghost), timeout=60, extra_env=RETRY_ENV)
    assert done.returncode == 2, done.stderr
    event = refused(done.stderr)
    assert ghost in str(event["error"]) and "does not exist" in str(event["error"])
    assert "user" in str(event["hint"])


def test_a_wrong_password_is_answered_at_once(throwaway_server: object) -> None:
    """A server of the test's own, where one role must give its password (scram-sha-256)."""
    from tests.pg_control import ThrowawayServer

    assert isinstance(throwaway_server, ThrowawayServer)
    name, password = f"wp_pw_{uuid.uuid4().hex[:8]}", "right-Pa55"
    with psycopg.connect(throwaway_server.url, autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password))
        )
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])  # type: ignore[index]
        hba.write_text(f"local all {name} scram-sha-256\n" + hba.read_text())
        conn.execute("SELECT pg_reload_conf()")
    good = with_user(throwaway_server.url, name, password)
    with psycopg.connect(good) as conn:  # the password is checked, and this one is right
        conn.execute("SELECT 1")
    done = run_cli(
        ["status"], with_user(throwaway_server.url, name, "wrong-Pa55"), timeout=60, extra_env=RETRY_ENV
    )
    assert done.returncode == 2, done.stderr
    event = refused(done.stderr)
    assert "password authentication failed" in str(event["error"])
    assert "password" in str(event["hint"])
    assert "wrong-Pa55" not in done.stderr


def test_a_server_that_is_down_is_still_retried(tmp_path: Path) -> None:
    """The other side of the line: a refused connection may heal, so it is retried, then exit 3."""
    from tests.daemon_helpers import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=2"
    done = run_cli(["status"], url, timeout=120, extra_env={"WEARABLE_RETRY_SECONDS": "2"})
    assert done.returncode == 3, done.stderr
    events = json_lines(done.stderr)
    assert [e for e in events if e.get("event") == "transient_fault_retrying"], done.stderr
    assert [e for e in events if e.get("event") == "database_unreachable"], done.stderr


# -- item 12: dbt's database message, and a log stream that stays JSON ---------------------------------


def test_a_failed_build_keeps_the_database_message(migrated_url: str, tmp_path: Path) -> None:
    """A raw table renamed away: the run row and the log say which relation is missing."""
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE raw.sleep RENAME TO sleep_renamed_away")
    lake = tmp_path / "lake"
    write_daily(lake / "dailyActivity_merged.csv", days=2)
    done = run_cli(["watch", "--once", "--data-dir", str(lake)], migrated_url)
    assert done.returncode == 1, done.stderr[-3000:]
    cause = 'relation "raw.sleep" does not exist'
    with psycopg.connect(migrated_url) as conn:
        row = conn.execute(
            "SELECT dbt_status, error_summary FROM ops.pipeline_runs ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
    assert row is not None and row[0] == "error"
    assert "stg_sleep" in row[1] and cause in row[1], row[1]
    failed = [e for e in json_lines(done.stderr) if e.get("event") == "dbt_build_failed"]
    assert failed and cause in str(failed[0]["failures"]), done.stderr[-3000:]


@pytest.mark.slow
def test_every_log_line_is_json_even_when_psycopg_warns(migrated_url: str, tmp_path: Path) -> None:
    """The COPY's connection is killed mid-load: psycopg logs "error ignored terminating
    <psycopg.Copy ...>" through the standard logging module, which must come out as JSON too."""
    lake = tmp_path / "lake"
    lake.mkdir()
    big = write_big_daily(tmp_path / "staging" / "dailyActivity_big.csv", 600_000)
    daemon = DaemonProcess(lake, migrated_url, tmp_path / "daemon.log", no_dbt=True, debounce=0.2)
    dbname = scalar(migrated_url, "SELECT current_database()")
    try:
        daemon.start().wait_ready()
        os.replace(big, lake / big.name)
        killed = wait_until(
            lambda: scalar(
                migrated_url,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND state = 'active' AND query ILIKE 'COPY%%'",
                (dbname,),
            ),
            timeout=60,
            interval=0.02,
            message="a COPY to kill",
        )
        assert killed == 1
        wait_until(lambda: daily_rows_loaded(migrated_url) == 600_000, timeout=120, message="the reload")
    finally:
        daemon.stop()
    events = json_lines(daemon.log_text())
    assert [e for e in events if "error ignored" in str(e.get("event"))], daemon.log_tail()


# -- item 13: a database name with a quote ----------------------------------------------------------


@pytest.fixture(params=["wear'able", 'wear"able'], ids=["single-quote", "double-quote"])
def quoted_database(request: pytest.FixtureRequest, pg_admin_url: str) -> Iterator[str]:
    """A real database whose name holds a quote; its connection string."""
    with scratch_database(pg_admin_url, prefix=request.param) as url:
        yield url


def test_a_database_name_with_a_quote_is_refused_before_anything_is_loaded(
    quoted_database: str, tmp_path: Path
) -> None:
    """dbt-postgres puts the name into SQL unescaped: refused at start (exit 2), nothing loaded."""
    lake = tmp_path / "lake"
    write_daily(lake / "dailyActivity_merged.csv", days=2)
    done = run_cli(["watch", "--once", "--data-dir", str(lake)], quoted_database, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    refusal = [e for e in json_lines(done.stderr) if e.get("event") == "database_name_unsupported"]
    assert refusal and "quote" in str(refusal[0]["reason"]), done.stderr[-3000:]
    assert "--no-dbt" in str(refusal[0]["hint"])
    with psycopg.connect(quoted_database) as conn:
        assert conn.execute("SELECT to_regclass('ops.raw_ingest_manifest')").fetchone() == (None,)


def test_a_database_name_with_a_quote_loads_without_dbt(quoted_database: str, tmp_path: Path) -> None:
    """What the refusal offers works end to end: loading alone, and status after it."""
    lake = tmp_path / "lake"
    write_daily(lake / "dailyActivity_merged.csv", days=2)
    done = run_cli(["watch", "--once", "--no-dbt", "--data-dir", str(lake)], quoted_database, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert daily_rows_loaded(quoted_database) == 2
    status = run_cli(["status", "--json"], quoted_database, timeout=60)
    assert status.returncode == 0, status.stderr[-3000:]
    assert json.loads(status.stdout)


# -- item 17: the connection string from a file ------------------------------------------------------


def test_the_connection_string_file_works_and_its_errors_do_not_show_it(
    database_url: str, tmp_path: Path
) -> None:
    good = tmp_path / "database_url"
    good.write_text(database_url + "\n")
    done = run_cli(["status", "--database-url-file", str(good)], "", timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    done = run_cli(["status"], "", timeout=60, extra_env={"DATABASE_URL_FILE": str(good)})
    assert done.returncode == 0, done.stderr[-3000:]
    bad = tmp_path / "bad_url"
    bad.write_text("host=db password='Unclosed5ecret\n")
    for args, env in (
        (["status", "--database-url-file", str(bad)], {}),
        (["status"], {"DATABASE_URL_FILE": str(tmp_path / "missing")}),
    ):
        done = run_cli(args, "", timeout=60, extra_env=env)
        assert done.returncode == 2, done.stderr
        assert "configuration error" in done.stderr
        assert "Unclosed5ecret" not in done.stderr + done.stdout


def test_the_pipeline_keeps_the_application_name_the_url_gives(database_url: str) -> None:
    from watcher.database import connect

    with connect(database_url) as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("wearable-pipeline",)
    named = make_conninfo(database_url, application_name="etl-loader")
    with connect(named) as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("etl-loader",)
