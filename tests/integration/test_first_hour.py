"""The first hour of a new user: what the commands say on an embedded server, and where drops go."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from tests.daemon_helpers import REPO_ROOT
from tests.pg_control import ThrowawayServer


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
