"""Shared fixtures: a real PostgreSQL server for the session and a fresh database per test.

The server is the one named by ``TEST_DATABASE_URL`` when that is set; otherwise an embedded
PostgreSQL (the same wheel the pipeline uses) is started in a temporary folder for the session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO_ROOT = Path(__file__).resolve().parent.parent
FITBIT_DIR = REPO_ROOT.parent / "shared" / "datasets" / "fitbit"


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A superuser connection string to a running server, for creating test databases.

    The embedded server's folder is a temporary folder of its own, not under pytest's numbered
    base folders: another pytest session on the machine may prune those while this one runs.
    """
    url = os.environ.get("TEST_DATABASE_URL", "").strip()
    if url:
        yield url
        return
    from watcher.database import EmbeddedServer

    root = Path(tempfile.mkdtemp(prefix="wearable-test-pg-"))
    server = EmbeddedServer(root / "data")
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str = "wp_test") -> Iterator[str]:
    """A new, empty database named ``prefix`` plus a random suffix; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_dbname(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database_url(pg_admin_url: str) -> Iterator[str]:
    """A new, empty database for one test; dropped afterwards."""
    with scratch_database(pg_admin_url) as url:
        yield url


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """A fresh database with the pipeline's migrations applied."""
    from watcher.database import migrate

    migrate(database_url)
    return database_url


@pytest.fixture
def fitbit_dir() -> Path:
    if not (FITBIT_DIR / "2016-04-12_2016-05-12").is_dir():
        pytest.skip(f"the public Fitbit export is not present at {FITBIT_DIR}")
    return FITBIT_DIR


from tests.pg_control import throwaway_server  # noqa: E402, F401 - a fixture for tests that restart a server
