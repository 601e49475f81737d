"""The first hour of a new user: what the commands say on an embedded server, and where drops go."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.daemon_helpers import REPO_ROOT, DaemonProcess, free_port, wait_until, write_daily
from tests.helpers import once_json, run_cli
from tests.pg_control import ThrowawayServer
from watcher.database import _server_running as server_running


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a newcomer: no database configured, no XDG_RUNTIME_DIR (root, containers)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DB_", "WEARABLE_")) and k not in ("DATABASE_URL", "XDG_RUNTIME_DIR")
    }
    env.update({"WEARABLE_LOG_FORMAT": "json", **extra})
    return env


def _cli(*args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args],
        cwd=REPO_ROOT,
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _events(stderr: str) -> list[dict[str, Any]]:
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def test_status_attaches_to_a_running_embedded_server_and_leaves_it_up(
    throwaway_server: ThrowawayServer, tmp_path: Path
) -> None:
    pgdata = str(throwaway_server.embedded._server.pgdata)
    done = _cli("status", "--pgdata", pgdata, "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    names = [e["event"] for e in _events(done.stderr)]
    assert "embedded_postgres_attached" in names
    assert "embedded_postgres_started" not in names and "embedded_postgres_stopped" not in names
    assert "embedded_postgres_detached" in names
    with psycopg.connect(throwaway_server.url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_no_runtime_dir_warning_on_an_embedded_command(tmp_path: Path) -> None:
    done = _cli("status", "--pgdata", str(tmp_path / "pg"), "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "XDG_RUNTIME_DIR" not in done.stderr
    assert "Warning" not in done.stderr
    names = [e["event"] for e in _events(done.stderr)]
    assert names[0] == "embedded_postgres_started" and names[-1] == "embedded_postgres_stopped"


def _log_events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return _events(daemon.log_text())


def _event(daemon: DaemonProcess, name: str) -> dict[str, Any] | None:
    return next((e for e in _log_events(daemon) if e.get("event") == name), None)


def test_the_daemon_says_which_folder_it_watches_and_what_is_in_it(migrated_url: str, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_daily(lake / "a" / "dailyActivity_merged.csv")
    code, _ = once_json(lake, migrated_url, "--no-dbt")
    assert code == 0
    write_daily(lake / "b" / "dailyActivity_merged.csv", first_id=1624580081)
    (lake / "notes.txt").write_text("not an export\n")
    with DaemonProcess(lake, migrated_url, tmp_path / "daemon.log", no_dbt=True) as daemon:
        event = wait_until(
            lambda: _event(daemon, "landing_zone_inventory"), timeout=90, message="the inventory line"
        )
    assert event["folder"] == str(lake.resolve())
    assert (event["files_routed"], event["files_ignored"]) == (2, 1)
    assert (event["files_already_loaded"], event["files_to_read"]) == (1, 1)
    assert _event(daemon, "no_routed_file") is None


def test_a_lake_without_a_routed_name_says_which_names_load(migrated_url: str, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "steps.csv").write_text("Id,Steps\n1,2\n")
    with DaemonProcess(lake, migrated_url, tmp_path / "daemon.log", no_dbt=True) as daemon:
        event = wait_until(lambda: _event(daemon, "no_routed_file"), timeout=90, message="the hint")
    assert "'daily' and 'activity' → raw.daily_activity" in event["hint"]
    assert "'sleep' → raw.sleep" in event["hint"]


def test_an_empty_lake_says_where_to_copy_exports(migrated_url: str, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    with DaemonProcess(lake, migrated_url, tmp_path / "daemon.log", no_dbt=True) as daemon:
        event = wait_until(lambda: _event(daemon, "landing_zone_empty"), timeout=90, message="the hint")
    assert event["folder"] == str(lake.resolve())
    assert "copy exports here" in event["hint"] and "'sleep' → raw.sleep" in event["hint"]
    assert _event(daemon, "no_routed_file") is None


def test_a_metrics_port_in_use_names_the_cure(migrated_url: str, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        daemon = DaemonProcess(tmp_path, migrated_url, tmp_path / "daemon.log", no_dbt=True, port=port)
        with daemon:
            code = daemon.wait_exit(90)
    assert code == 2
    plain = [line for line in daemon.log_text().splitlines() if line.startswith("wearable-pipeline:")]
    assert plain and f"127.0.0.1:{port}" in plain[0]
    assert "--metrics-addr HOST:PORT" in plain[0] and "--metrics-addr off" in plain[0]
    event = _event(daemon, "metrics_endpoint_failed")
    assert event is not None and "--metrics-addr" in event["hint"]


def test_sql_opens_psql_on_the_embedded_server_and_stops_it_after(tmp_path: Path) -> None:
    pgdata = tmp_path / "pg"
    done = subprocess.run(
        [sys.executable, "-m", "watcher", "sql", "--pgdata", str(pgdata), "--data-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        env=_clean_env(),
        input="SELECT current_database() || ':' || count(*) FROM ops.schema_migrations;\n",
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wearable:" in done.stdout  # psql ran its query on the embedded database, migrated
    names = [e["event"] for e in _events(done.stderr)]
    assert names[-1] == "embedded_postgres_stopped"
    assert not server_running(pgdata)


def test_a_pass_over_no_routed_file_says_which_names_load(migrated_url: str, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "hourlySteps_merged.csv").write_text("Id,ActivityHour,StepTotal\n1,4/12/2016 12:00:00 AM,3\n")
    done = run_cli(["watch", "--once", "--no-dbt", "--data-dir", str(lake)], migrated_url)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 ignored" in done.stdout
    hint = next(line for line in done.stdout.splitlines() if line.startswith("hint: "))
    assert "'daily' and 'activity' → raw.daily_activity; 'sleep' → raw.sleep" in hint


@pytest.mark.slow
def test_make_run_demos_the_sample_apart_then_loads_drops_into_the_lake(tmp_path: Path) -> None:
    """The README's run command, as a newcomer runs it (no database configured)."""
    venv = Path(sys.prefix)
    assert (venv / "bin" / "wearable-pipeline").is_file(), "the package is not installed in this environment"
    lake, pgdata, sample_pgdata = tmp_path / "data_lake", tmp_path / "pg", tmp_path / "pg-sample"
    lake.mkdir()
    port = free_port()
    env = _clean_env(WEARABLE_PGDATA=str(pgdata), WEARABLE_METRICS_ADDR=f"127.0.0.1:{port}")
    log_path = tmp_path / "make-run.log"
    # -o: this environment is installed already (make must not reinstall it from a test); VENV
    # points make at it, DATA and SAMPLE_PGDATA keep the repository's own folders untouched.
    with open(log_path, "wb") as log:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "-o", str(venv / ".installed"), "run",
             f"VENV={venv}", f"DATA={lake}", f"SAMPLE_PGDATA={sample_pgdata}"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def text() -> str:
        return log_path.read_text(errors="replace")

    def daemon_part() -> str:
        return text().split("== Now watching", 1)[-1]

    try:
        wait_until(lambda: "landing_zone_empty" in text(), timeout=240, message="the daemon on the lake")
        demo = text()
        assert "holds no CSV export yet" in demo and "Users by trend (12 in all)" in demo
        assert f'"folder": "{lake.resolve()}"' in demo
        write_daily(lake / "2016-04-12_2016-05-12" / "dailyActivity_merged.csv", users=2, days=20)
        wait_until(
            lambda: '"dbt_build_succeeded"' in daemon_part(), timeout=240, message="the drop loaded and built"
        )
        done = _cli("report", "--json", "--pgdata", str(pgdata), "--data-dir", str(lake))
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout)["users"] == 2  # the sample's 12 users are not here
    finally:
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C on the terminal reaches the whole group
        make.wait(60)
    assert '"daemon_stopped"' in text()
    assert not server_running(pgdata) and not server_running(sample_pgdata)
