"""Shared fixtures: a real PostgreSQL server for the session and a fresh database per test.

The server is the one named by ``TEST_DATABASE_URL`` when that is set; otherwise an embedded
PostgreSQL (the same wheel the pipeline uses) is started in a temporary folder for the session.

The suite runs in parallel (pytest-xdist, options in pyproject.toml): each worker process is a
session of its own, with its own embedded server and its own dbt target and log folders. The
hooks at the end of this file choose the number of workers and put the modules holding the
longest tests first.
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


@pytest.fixture(scope="session", autouse=True)
def dbt_scratch_folders() -> Iterator[Path]:
    """dbt's target and log folders for this session (one per xdist worker), outside the repository.

    dbt writes its parse cache (``partial_parse.msgpack``) and manifest to ``dbt/target`` by
    default: two workers building at once would overwrite each other's. Every dbt this session
    runs reads these variables: in-process builds, and the CLI and daemon processes the tests
    start (they inherit the environment; ``DaemonProcess`` gives each daemon folders of its own).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    root = Path(tempfile.mkdtemp(prefix=f"wearable-test-dbt-{worker}-"))
    saved = {key: os.environ.get(key) for key in ("DBT_TARGET_PATH", "DBT_LOG_PATH")}
    os.environ["DBT_TARGET_PATH"] = str(root / "target")
    os.environ["DBT_LOG_PATH"] = str(root / "logs")
    try:
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(root, ignore_errors=True)


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


# -- parallel runs (pytest-xdist) -----------------------------------------------------------------


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per CPU, at least two (most tests wait on processes, not the CPU);
    none at all, the run in this process, when the command names a single test (``file::test``).

    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still sets the number; ``-n N`` and ``-n 0`` bypass this.
    """
    chosen = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS", "").strip()
    if chosen.isdigit():
        return int(chosen)
    if len(config.args) == 1 and "::" in config.args[0]:
        return 0
    return max(2, len(os.sched_getaffinity(0)))


def _start_rank(item: pytest.Item) -> int:
    """0 for the container tests, 1 for the slow ones, 2 for the rest."""
    if item.get_closest_marker("container"):
        return 0
    if item.get_closest_marker("slow") or item.get_closest_marker("faults"):
        return 1
    return 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The modules holding the longest tests first, each module kept whole and in its order.

    ``--dist loadscope`` hands out whole modules (a module-scoped fixture is set up once) in this
    order: a long module started last would keep one worker busy after the others are done.
    """
    rank: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        rank[module] = min(rank.get(module, 2), _start_rank(item))
    items.sort(key=lambda item: rank[item.nodeid.split("::", 1)[0]])


from tests.pg_control import throwaway_server  # noqa: E402, F401 - a fixture for tests that restart a server
