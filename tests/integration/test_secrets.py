"""A password in DATABASE_URL or DB_PASSWORD never reaches a log line, a table, a report or /metrics.

A real role with a password owns the test database; the pipeline connects as that role (the local
server may trust connections without checking the password: the grep is the point). Every byte
the commands print, every row of every ``ops.*`` and ``raw.*`` table, the daemon's log and its
HTTP answers are searched for the password, raw and URL-encoded, and for a core of it that no
encoding changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.bad_inputs import build_lake, file_cases, row_cases
from tests.helpers import run_cli

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass
class Role:
    name: str
    password: str
    core: str
    database: str
    host: str
    port: str

    @property
    def url(self) -> str:
        """A URL whose password needs percent-encoding, and whose host may be a socket folder."""
        return (
            f"postgresql://{self.name}:{quote(self.password, safe='')}@/{self.database}"
            f"?host={quote(self.host, safe='')}&port={self.port}"
        )

    def forms(self) -> tuple[str, ...]:
        return (self.password, quote(self.password, safe=""), quote(self.password), self.core)


@pytest.fixture(scope="module")
def role(pg_admin_url: str) -> Iterator[Role]:
    token = uuid.uuid4().hex[:10]
    core = f"Core{token}S3cr3t"
    password = f"p@ss:{core}/%?#&="
    name, database = f"wp_role_{token}", f"wp_secret_{token}"
    params = conninfo_to_dict(pg_admin_url)
    host, port = str(params.get("host") or "localhost"), str(params.get("port") or "5432")
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(name))
        )
    try:
        yield Role(name, password, core, database, host, port)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def assert_clean(text: str, role: Role, where: str) -> None:
    for form in role.forms():
        assert form not in text, f"the password ({form!r}) appears in {where}:\n{_around(text, form)}"


def _around(text: str, needle: str) -> str:
    at = text.find(needle)
    return text[max(0, at - 300) : at + 300]


def table_dump(url: str) -> str:
    """Every row of every table in the ops and raw schemas, as text."""
    lines = []
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema IN ('ops', 'raw') ORDER BY 1, 2"
        ).fetchall()
        assert len(tables) >= 6
        for schema, table in tables:
            for (row,) in conn.execute(
                sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier(schema, table))
            ):
                lines.append(f"{schema}.{table}: {row}")
    return "\n".join(lines)


def lake_with_bad_input(root: Path) -> Path:
    lake = root / "lake"
    build_lake(lake, [*row_cases()[:4], *file_cases()[:8]])
    return lake


def test_commands_never_show_the_password(role: Role, tmp_path: Path) -> None:
    lake = lake_with_bad_input(tmp_path)
    outputs = []
    once = run_cli(["watch", "--once", "--json", "--no-dbt", "--data-dir", str(lake)], role.url)
    assert once.returncode == 1, once.stderr[-2000:]  # the bad input was really processed
    outputs.append(("watch --once", once))
    for args in (["status", "--json"], ["status"], ["reprocess", "--all-rejected", "--json", "--no-dbt"]):
        outputs.append((" ".join(args), run_cli([*args, "--data-dir", str(lake)], role.url)))

    # The same, connected through DB_* variables: DB_PASSWORD holds the password.
    (lake / "more").mkdir()
    (lake / "more" / "dailyActivity_empty.csv").write_bytes(b"")
    env = {"DB_HOST": role.host, "DB_PORT": role.port, "DB_NAME": role.database, "DB_USER": role.name}
    env["DB_PASSWORD"] = role.password
    by_parts = run_cli(["watch", "--once", "--no-dbt", "--data-dir", str(lake)], "", extra_env=env)
    assert by_parts.returncode == 1, by_parts.stderr[-2000:]
    outputs.append(("watch --once with DB_PASSWORD", by_parts))

    for what, done in outputs:
        assert_clean(done.stdout, role, f"the stdout of {what}")
        assert_clean(done.stderr, role, f"the log of {what}")
    assert_clean(table_dump(role.url), role, "a table")
    with psycopg.connect(role.url) as conn:  # the pipeline really worked as the role
        owner = conn.execute(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'ops'"
        ).fetchone()
    assert owner == (role.name,)


def test_the_search_would_find_a_leak(role: Role) -> None:
    for form in role.forms():
        with pytest.raises(AssertionError):
            assert_clean(f"error: could not connect with {form}", role, "a test string")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda r: r.url.replace(f"port={r.port}", "port=1"), id="connection-refused"),
        pytest.param(
            lambda r: r.url.replace(f"host={quote(r.host, safe='')}", "host=no.such.host.invalid"),
            id="unknown-host",
        ),
        pytest.param(lambda r: r.url.replace(f"port={r.port}", "port=notaport"), id="malformed-port"),
        pytest.param(lambda r: r.url + "&no_such_option=1", id="unknown-option"),
        pytest.param(
            lambda r: r.url.replace(quote(r.password, safe=""), "p%zz" + r.core), id="malformed-escape"
        ),
    ],
)
def test_a_bad_database_url_is_reported_without_its_password(
    role: Role, tmp_path: Path, damage: object
) -> None:
    url = damage(role)  # type: ignore[operator]
    (tmp_path / "lake").mkdir()
    done = run_cli(
        ["watch", "--once", "--no-dbt", "--data-dir", str(tmp_path / "lake")],
        url,
        extra_env={"WEARABLE_RETRY_SECONDS": "1"},
        timeout=120,
    )
    assert done.returncode in (2, 3), done
    assert_clean(done.stdout + done.stderr, role, "the error report")


def test_a_malformed_database_url_flag_is_reported_without_its_password(role: Role, tmp_path: Path) -> None:
    url = role.url.replace(quote(role.password, safe=""), "p%zz" + role.core)
    (tmp_path / "lake").mkdir()
    done = run_cli(
        ["watch", "--once", "--no-dbt", "--data-dir", str(tmp_path / "lake"), "--database-url", url], ""
    )
    assert done.returncode == 2
    assert_clean(done.stdout + done.stderr, role, "the error report")


def test_the_daemon_never_shows_the_password(role: Role, tmp_path: Path) -> None:
    from tests.daemon_helpers import DaemonProcess, wait_until

    lake = lake_with_bad_input(tmp_path / "d")
    daemon = DaemonProcess(lake, role.url, tmp_path / "daemon.log", no_dbt=True)
    with daemon:
        daemon.wait_ready(timeout=90)
        (lake / "late").mkdir()
        (lake / "late" / "dailyActivity_late.csv").write_bytes(b"Id,Nothing\r\n1,2\r\n")

        def processed() -> bool:
            return daemon.metric("wearable_files_processed_total", outcome="rejected") >= 9

        wait_until(processed, timeout=60, message="the bad files to be processed")
        bodies = [daemon.get(path)[1] for path in ("/metrics", "/healthz", "/readyz", "/")]
    for body in bodies:
        assert_clean(body, role, "an HTTP answer of the daemon")
    assert "wearable_files_processed_total" in bodies[0]
    assert_clean(daemon.log_text(), role, "the daemon's log")
    assert_clean(table_dump(role.url), role, "a table")
