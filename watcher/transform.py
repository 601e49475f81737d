"""Run dbt builds in-process, keeping the parsed project warm between builds.

dbt's start-up (imports and parsing) costs seconds; a build of a few models costs a fraction of
that. One ``Transformer`` per process parses once and reuses the manifest. Builds never overlap:
a lock per process (dbtRunner is not re-entrant) and a PostgreSQL advisory lock per database,
so that several pipeline instances take turns.

A build runs its data tests in one of two ways (``WEARABLE_DBT_TESTS``):

- ``after`` (default): one invocation builds the models, a second one runs the data tests of the
  same selection; the models are ready (the caller is told) before the tests start. A failing
  test still fails the build; models downstream of it are built anyway.
- ``gate``: one ``dbt build``, whose failing test skips the models downstream of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg import sql

from watcher.config import DBT_TEST_MODES
from watcher.errortext import first_line
from watcher.libpq_env import for_dbt, write_service_file
from watcher.retry import is_transient, is_transient_message, transient_line

log = structlog.get_logger(__name__)

BUILD_LOCK_KEY = 0x5744_4254  # "WDBT": one dbt build at a time per database
FAILED_STATUSES = {"error", "fail", "runtime error"}

# Each build would otherwise rewrite target/manifest.json and target/run_results.json (about
# 0.8 MB of JSON, some 0.2 s of CPU per build); nothing reads them: the results come back in
# process and go to ops.pipeline_runs and the logs. The parse at start still writes the manifest.
BUILD_FLAGS = ("--no-write-json",)
# dbt unit tests check the models' SQL, not the data: the test suite runs them.
NO_UNIT_TESTS = ("--exclude-resource-type", "unit_test")
MODEL_TYPES = ("--resource-type", "model", "--resource-type", "seed", "--resource-type", "snapshot")
TEST_TYPES = ("--resource-type", "test")
FINGERPRINTS_MODEL = "int_user_source_fingerprints"


class TransformUnavailable(RuntimeError):
    """dbt could not run at all (not installed, bad project, unreachable database).

    ``transient``: the cause may pass by itself (the database restarting, a connection cut);
    the build is then tried again.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


LOCK_TIMEOUT_MESSAGE = "canceling statement due to lock timeout"


@dataclass
class NodeResult:
    unique_id: str
    status: str
    message: str | None
    execution_time_s: float


@dataclass
class BuildResult:
    status: str
    """``success`` or ``error`` (some model or test failed)."""
    duration_s: float
    selectors: tuple[str, ...]
    nodes: list[NodeResult] = field(default_factory=list)
    tests: str = "gate"
    """How the data tests ran: ``gate`` (within the build) or ``after`` (once the models were built)."""
    models_duration_s: float | None = None
    """Seconds until the models were built (and, with ``gate``, tested); None when they were not."""
    loads_seen: int | None = None
    """The data tests' scope: the highest load id the previous builds saw (see ``_loads_seen``)."""

    @property
    def failures(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.status in FAILED_STATUSES]

    def transient_fault(self) -> str | None:
        """The first failure's message when the build failed and every failure was a transient
        fault (a retry may pass); None otherwise (a success, or a failure a retry repeats)."""
        failed = self.failures
        if self.status == "success" or not failed:
            return None
        if all(n.status == "error" and is_transient_message(n.message) for n in failed):
            return transient_line(failed[0].message)
        return None

    def lock_timeouts(self) -> list[str]:
        """The nodes whose statement waited for a lock past the lock timeout."""
        return [n.unique_id for n in self.failures if LOCK_TIMEOUT_MESSAGE in (n.message or "").lower()]

    def summary(self) -> str | None:
        """Each failed node with its whole database message (the cause, not only dbt's headline)."""
        failed = self.failures
        if not failed:
            return None
        return "; ".join(f"{n.unique_id}: {n.status}: {n.message or 'no message'}" for n in failed)


def profile_environment(conninfo: str, schema: str = "analytics", threads: int = 4) -> dict[str, str]:
    """The environment dbt's connections need: every parameter of the pipeline's connection.

    The WEARABLE_DBT_* variables ``dbt/profiles.yml`` reads, plus the ``PG*`` variables (and, for
    the few parameters that have none, a private libpq service file) for the rest; see
    ``watcher.libpq_env``.
    """
    found = for_dbt(conninfo)
    params = found.profile
    environment = {
        "WEARABLE_DBT_HOST": params.get("host") or "localhost",
        "WEARABLE_DBT_PORT": params.get("port") or "5432",
        "WEARABLE_DBT_USER": params.get("user") or "postgres",
        "WEARABLE_DBT_PASSWORD": params.get("password") or "",
        "WEARABLE_DBT_DBNAME": params.get("dbname") or params.get("user") or "postgres",
        "WEARABLE_DBT_SCHEMA": schema,
        "WEARABLE_DBT_THREADS": str(threads),
        "WEARABLE_DBT_CONNECT_TIMEOUT": params.get("connect_timeout") or "10",
        "WEARABLE_DBT_KEEPALIVES_IDLE": params.get("keepalives_idle") or "0",
        "WEARABLE_DBT_APPLICATION_NAME": params.get("application_name") or "dbt",
        **found.environment,
    }
    if found.service:
        environment.update(write_service_file(found.service))
    return environment


def selectors_for(tables: Iterable[str]) -> tuple[str, ...]:
    """dbt selectors for everything downstream of the given raw tables."""
    return tuple(f"source:raw.{t}+" for t in sorted(set(tables)))


class Transformer:
    """One warm dbt project bound to one database."""

    def __init__(
        self,
        project_dir: Path,
        conninfo: str,
        *,
        threads: int = 4,
        tests: str = "after",
        lock_timeout_seconds: float = 0.0,
    ) -> None:
        if tests not in DBT_TEST_MODES:
            raise ValueError(f"tests must be one of {DBT_TEST_MODES}, got {tests!r}")
        self.project_dir = project_dir
        self.conninfo = conninfo
        self.threads = threads
        self.tests = tests
        self.lock_timeout_ms = round(lock_timeout_seconds * 1000)
        self._lock_conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._runner: Any = None
        self._models: list[tuple[str, str, str]] = []
        self._stable_views: dict[str, set[str]] = {}
        """Views a build drops only by building them, or a view they read, again (see below)."""
        self._views_built: set[str] = set()

    @property
    def available(self) -> bool:
        return (self.project_dir / "dbt_project.yml").is_file()

    def _base_args(self) -> list[str]:
        return [
            "--project-dir",
            str(self.project_dir),
            "--profiles-dir",
            str(self.project_dir),
            "--log-level",
            "none",
            "--log-level-file",
            "info",
        ]

    def warm(self) -> None:
        """Parse the project now (the daemon does this at start, off the loading path)."""
        with self._lock:
            self._warm_runner()

    def _warm_runner(self) -> Any:
        """Parse the project once; later builds reuse the manifest."""
        if self._runner is not None:
            return self._runner
        try:
            from dbt.cli.main import dbtRunner
        except ImportError as exc:  # pragma: no cover - dbt is a dependency
            raise TransformUnavailable("dbt-core is not installed") from exc
        # dbt reads its profile from the environment (dbt/profiles.yml): hand it our connection.
        os.environ.update(profile_environment(self.conninfo, threads=self.threads))
        if self.lock_timeout_ms:
            # dbt-postgres has no session settings of its own: libpq's PGOPTIONS reaches each of
            # its connections (the last ``-c`` wins over one the user set there).
            os.environ["PGOPTIONS"] = _with_lock_timeout(
                os.environ.get("PGOPTIONS", ""), self.lock_timeout_ms
            )
        parsed = dbtRunner().invoke(["parse", *self._base_args()])
        if not parsed.success or parsed.result is None:
            raise TransformUnavailable(
                f"dbt could not parse the project: {parsed.exception or 'see dbt logs'}"
            )
        manifest: Any = parsed.result
        self._runner = dbtRunner(manifest=manifest)
        self._models = [
            (node.name, node.schema, node.alias or node.name)
            for node in manifest.nodes.values()
            if node.resource_type == "model" and node.config.materialized != "ephemeral"
        ]
        self._stable_views = _stable_views(manifest)
        self._views_built = set()
        return self._runner

    def models_missing(self) -> bool:
        """Whether some model has no relation in the database (a new database, or an upgrade
        that dropped the views built on the raw tables)."""
        with self._lock:
            self._warm_runner()
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                return bool(self._missing_models(conn))

    def _missing_models(self, conn: psycopg.Connection[Any]) -> list[str]:
        """Models whose relation does not exist yet (a new database, or models added by an upgrade).

        Selecting only what is downstream of a changed table would fail when such a model reads a
        relation that was never built; these are added to the selection.
        """
        missing = []
        for name, schema, alias in self._models:
            row = conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{alias}"',)).fetchone()
            if row is None or row[0] is None:
                missing.append(name)
        return missing

    def _loads_seen(self, conn: psycopg.Connection[Any]) -> int | None:
        """The highest load id the fingerprints hold before this build: the data tests' scope.

        ``macros/test_scopes.sql`` reads the same value when no var is given; read here, before
        the models are rebuilt, it still names the loads that are new to this build when the
        tests run after the fingerprints were rebuilt. 0 when there are no fingerprints yet (every
        row is tested); None when it cannot be read (the macro then reads it itself).
        """
        relation = next((m for m in self._models if m[0] == FINGERPRINTS_MODEL), None)
        if relation is None:
            return None
        _, schema, alias = relation
        try:
            exists = conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{alias}"',)).fetchone()
            if exists is None or exists[0] is None:
                return 0
            row = conn.execute(
                sql.SQL(
                    "SELECT coalesce(max(greatest(activity_max_load_id, sleep_max_load_id)), 0) FROM {}"
                ).format(sql.Identifier(schema, alias))
            ).fetchone()
        except psycopg.Error as exc:
            log.warning("dbt_test_scope_unknown", step="dbt", error=first_line(exc))
            return None
        return int(row[0]) if row is not None else 0

    def build(
        self,
        tables: Iterable[str],
        *,
        full_refresh: bool = False,
        on_models_built: Callable[[BuildResult], None] | None = None,
    ) -> BuildResult:
        """Build the models downstream of ``tables`` and run their data tests.

        ``on_models_built`` is called, with the build lock still held, as soon as the models are
        built: before the data tests with ``after``, after them with ``gate``; not at all when a
        model failed (or, with ``gate``, a test).
        """
        selectors = selectors_for(tables)
        with self._lock:
            try:
                return self._build_connected(selectors, full_refresh, on_models_built)
            except psycopg.Error as exc:
                # The build lock's connection: the database went away before or during the build.
                raise TransformUnavailable(
                    f"dbt build could not run: {first_line(exc)}", transient=is_transient(exc)
                ) from exc

    def _build_connected(
        self,
        selectors: tuple[str, ...],
        full_refresh: bool,
        on_models_built: Callable[[BuildResult], None] | None,
    ) -> BuildResult:
        with psycopg.connect(self.conninfo, autocommit=True) as lock_conn:
            # Waiting for another instance's build is no lock fault: no lock timeout here.
            lock_conn.execute("SET lock_timeout = 0")
            self._lock_conn = lock_conn
            try:
                lock_conn.execute("SELECT pg_advisory_lock(%s)", (BUILD_LOCK_KEY,))
            finally:
                self._lock_conn = None
            started = time.monotonic()
            log.info(
                "dbt_build_started",
                step="dbt",
                selectors=list(selectors),
                tests=self.tests,
                wall_time=time.time(),
            )
            try:
                result = self._build_locked(lock_conn, selectors, started, full_refresh, on_models_built)
            finally:
                duration = time.monotonic() - started
                log.info(
                    "dbt_build_ended", step="dbt", duration_ms=round(duration * 1000), wall_time=time.time()
                )
        result.duration_s = duration
        return result

    def _build_locked(
        self,
        conn: psycopg.Connection[Any],
        selectors: tuple[str, ...],
        started: float,
        full_refresh: bool,
        on_models_built: Callable[[BuildResult], None] | None,
    ) -> BuildResult:
        runner = self._warm_runner()
        missing = self._missing_models(conn)
        args = [*self._base_args(), *BUILD_FLAGS, "--select", *selectors, *missing, *NO_UNIT_TESTS]
        seen = None
        if full_refresh:
            args.append("--full-refresh")
        elif (seen := self._loads_seen(conn)) is not None:
            args += ["--vars", json.dumps({"loads_seen_before_build": seen})]
        if self.tests == "gate":
            nodes, success = self._invoke(runner, ["build", *args])
            self._note_views(nodes)
            result = BuildResult(
                "success" if success else "error", 0.0, selectors, nodes, "gate", loads_seen=seen
            )
            if success:
                result.models_duration_s = time.monotonic() - started
                if on_models_built is not None:
                    on_models_built(result)
            return result
        # A view built by this process already has the definition the manifest gives it and
        # reads its tables live: building it again changes nothing but costs a node on the
        # latency path. Its data tests still run.
        skip = [] if full_refresh else self._views_to_skip(missing)
        nodes, success = self._invoke(
            runner, ["build", *args, *MODEL_TYPES, *(["--exclude", *skip] if skip else [])]
        )
        self._note_views(nodes)
        result = BuildResult(
            "success" if success else "error", 0.0, selectors, nodes, "after", loads_seen=seen
        )
        if not success:
            # The tests would only look at models that failed or were skipped, or at the old
            # rows of a model whose parent failed; the batch failed already, and the next build
            # selects these tables again (their loads are newer than the last successful build).
            log.warning("dbt_tests_not_run", step="dbt", reason="a model failed")
            return result
        result.models_duration_s = time.monotonic() - started
        if on_models_built is not None:
            on_models_built(result)
        tests, success = self._invoke(runner, ["build", *args, *TEST_TYPES])
        result.nodes += tests
        result.status = "success" if success else "error"
        return result

    def _views_to_skip(self, missing: list[str]) -> list[str]:
        """Views this process built that exist and read from no view that is built again.

        Building a view again drops the old one with CASCADE, and with it every view that reads
        from it: those must be built again in the same build.
        """
        skip = self._views_built - set(missing)
        while True:
            kept = {v for v in skip if self._stable_views[v] <= skip}
            if kept == skip:
                return sorted(skip)
            skip = kept

    def _note_views(self, nodes: list[NodeResult]) -> None:
        for node in nodes:
            name = node.unique_id.rsplit(".", 1)[-1]
            if (
                node.unique_id.startswith("model.")
                and node.status == "success"
                and name in self._stable_views
            ):
                self._views_built.add(name)

    def _invoke(self, runner: Any, args: list[str]) -> tuple[list[NodeResult], bool]:
        outcome = runner.invoke(args)
        if outcome.exception is not None or outcome.result is None:
            self._runner = None  # parse afresh next time
            raise TransformUnavailable(
                f"dbt build could not run: {outcome.exception}",
                transient=is_transient_message(str(outcome.exception)),
            )
        nodes = [_node_result(r) for r in getattr(outcome.result, "results", [])]
        return nodes, bool(outcome.success)

    # -- called from other threads (a stop request, /readyz) --------------------------------------

    def cancel(self) -> int:
        """Cancel the statements dbt's connections (and the wait for the build lock) run now.

        psycopg2's ``cancel`` is made to be called from another thread. Returns how many were asked.
        """
        asked = 0
        for handle in _dbt_handles():
            with contextlib.suppress(Exception):
                handle.cancel()
                asked += 1
        lock_conn = self._lock_conn
        if lock_conn is not None:
            with contextlib.suppress(Exception):
                lock_conn.cancel_safe(timeout=3.0)
                asked += 1
        return asked

    def backend_pids(self) -> list[int]:
        """The server processes of dbt's open connections (to show what they wait for)."""
        pids = []
        for handle in _dbt_handles():
            with contextlib.suppress(Exception):
                pids.append(int(handle.get_backend_pid()))
        return pids


def _dbt_handles() -> list[Any]:
    """The open psycopg2 connections of dbt's adapters in this process, without opening any."""
    try:
        from dbt.adapters.factory import FACTORY
    except ImportError:  # pragma: no cover - dbt is a dependency
        return []
    with FACTORY.lock:
        adapters = list(FACTORY.adapters.values())
    handles = []
    for adapter in adapters:
        manager = getattr(adapter, "connections", None)
        if manager is None:
            continue
        with manager.lock:
            connections = list(manager.thread_connections.values())
        for connection in connections:
            handle = getattr(connection, "_handle", None)  # ``.handle`` would open a lazy one
            if connection.state == "open" and hasattr(handle, "cancel") and not getattr(handle, "closed", 1):
                handles.append(handle)
    return handles


def _with_lock_timeout(options: str, milliseconds: int) -> str:
    """libpq ``options`` with our ``lock_timeout`` last, in place of any earlier one."""
    words = options.split()
    kept: list[str] = []
    index = 0
    while index < len(words):
        if (
            words[index] == "-c"
            and words[index + 1 : index + 2]
            and words[index + 1].startswith("lock_timeout=")
        ):
            index += 2
            continue
        kept.append(words[index])
        index += 1
    return " ".join([*kept, "-c", f"lock_timeout={milliseconds}"])


def _stable_views(manifest: Any) -> dict[str, set[str]]:
    """Views that no build drops but by building them, or a view they read from, again.

    PostgreSQL drops a view with what it reads from directly (through other views and ephemeral
    models). Building a view or a ``table`` model again drops the old relation with CASCADE; an
    incremental model is kept. So a view qualifies when no ``table`` model is among what it reads
    directly; each comes with the views it reads directly.
    """
    models = {uid: node for uid, node in manifest.nodes.items() if node.resource_type == "model"}

    def reads(uid: str, seen: frozenset[str]) -> tuple[set[str], bool]:
        """(views read directly, whether no table is read directly) for a view or ephemeral model."""
        views: set[str] = set()
        stable = True
        for parent in models[uid].depends_on.nodes:
            node = models.get(parent)
            if node is None or parent in seen or node.config.materialized == "incremental":
                continue
            if node.config.materialized == "view":
                views.add(node.name)
            elif node.config.materialized == "ephemeral":
                inlined, ok = reads(parent, seen | {parent})
                views |= inlined
                stable = stable and ok
            else:
                stable = False
        return views, stable

    found = {}
    for uid, node in models.items():
        if node.config.materialized == "view":
            views, stable = reads(uid, frozenset({uid}))
            if stable:
                found[node.name] = views
    return found


NODE_MESSAGE_CHARS = 1000
"""A failed node's message is kept up to this length: enough for dbt's headline, the server's
message and its detail, hint and line; the run row's summary is bounded again (4000)."""


def node_message(message: str | None) -> str | None:
    """dbt's message for a node on one line: every line kept, in order, without the caret line
    that points into the SQL, whitespace collapsed, bounded."""
    if message is None:
        return None
    lines = [" ".join(line.split()) for line in str(message).splitlines()]
    kept = [line for line in lines if line and set(line) != {"^"}]
    text = " | ".join(kept)
    if not text:
        return None
    return text if len(text) <= NODE_MESSAGE_CHARS else text[: NODE_MESSAGE_CHARS - 1] + "…"


def _node_result(result: Any) -> NodeResult:
    return NodeResult(
        unique_id=str(result.node.unique_id),
        status=str(result.status),
        message=node_message(result.message),
        execution_time_s=float(result.execution_time or 0.0),
    )
