"""Settings: one frozen object built from the environment and command-line flags.

This is the only module that reads ``os.environ``. Flags given on the command line win over the
environment; ``DATABASE_URL`` (or the file ``DATABASE_URL_FILE`` names) wins over the ``DB_*``
variables.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class ConfigError(ValueError):
    """A setting is missing or malformed (exit code 2)."""


DEFAULT_METRICS_ADDR = "127.0.0.1:9108"
BUCKET_SCHEMES = ("s3", "gs", "az")
FOLDER_POLL_SECONDS = 1.0
BUCKET_POLL_SECONDS = 10.0
"""A bucket is listed this often by default: a poll between two full listings is one request."""
ENDPOINT_VARIABLES = {
    "s3": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"),
    "az": ("AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT", "AZURITE_BLOB_STORAGE_URL"),
    "gs": ("GOOGLE_BASE_URL",),
}
"""The variables naming a cloud's endpoint, in the order its client reads them. A plain http one
(an emulator, a private server) is allowed because it says so; ``AZURITE_BLOB_STORAGE_URL`` is
read only with ``AZURE_STORAGE_USE_EMULATOR=true``, which allows http by itself."""
CLOUD_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_")
CLOUD_SECRETS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_MASTER_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "GOOGLE_BEARER_TOKEN",
)
"""Secrets of the object store's standard variables (read by its client, never by this program):
hidden from the logs like the database password."""
DBT_TEST_MODES = ("after", "gate")


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    """Connection string for an external PostgreSQL; None means: start the embedded one."""
    data_dir: Path
    """The landing folder (unused when ``bucket_url`` is set)."""
    pgdata_dir: Path
    dbt_project_dir: Path
    run_dbt: bool = True
    dbt_threads: int = 4
    dbt_tests: str = "after"
    """When a batch's dbt data tests run: ``after`` the models are built (the drop is ready
    first), or within one ``dbt build`` as a ``gate`` (a failing test skips the models below it)."""
    metrics_addr: tuple[str, int] | None = ("127.0.0.1", 9108)
    debounce_seconds: float = 1.0
    reconcile_seconds: float = 60.0
    force_polling: bool = False
    polling_interval_seconds: float = 1.0
    retry_total_seconds: float = 60.0
    """How long transient database faults are retried before the pass gives up (exit code 3)."""
    retry_max_wait_seconds: float = 5.0
    lock_timeout_seconds: float = 30.0
    """Longest wait of one statement (loads and dbt builds) for a lock; 0: no limit."""
    error_budget_fraction: float = 0.01
    error_budget_rows: int = 1000
    max_line_bytes: int = 1 << 20
    bucket_url: str | None = None
    """The landing zone as a bucket (``s3://BUCKET/PREFIX/``, ``gs://``, ``az://``); None: the folder."""
    allow_http: bool = False
    """The object store's endpoint is plain http (an ``AWS_ENDPOINT_URL`` that says so)."""
    instance: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")

    @property
    def landing(self) -> str:
        """The landing zone as the logs name it: the bucket URL or the absolute folder."""
        return self.bucket_url or str(self.data_dir)

    def redacted_database(self) -> str:
        """The database location for logs, never with its password."""
        if self.database_url is None:
            return f"embedded:{self.pgdata_dir}"
        return redact_conninfo(self.database_url)


def redact_conninfo(conninfo: str) -> str:
    """Return ``host:port/dbname`` of a connection string: no user password can leak through it."""
    try:
        parts = conninfo_to_dict(conninfo)
    except Exception:
        return "<unparseable connection string>"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    dbname = parts.get("dbname") or parts.get("user") or ""
    return f"{host}:{port}/{dbname}"


def database_url_from_env(env: Mapping[str, str]) -> str | None:
    """``DATABASE_URL`` or the file ``DATABASE_URL_FILE`` names, else a URL built from
    ``DB_HOST`` and friends, else None."""
    url = env.get("DATABASE_URL", "").strip()
    url_file = env.get("DATABASE_URL_FILE", "").strip()
    if url and url_file:
        raise ConfigError("DATABASE_URL and DATABASE_URL_FILE are both set: set one of them")
    if url:
        return checked_url(url, "DATABASE_URL")
    if url_file:
        return database_url_from_file(url_file, "DATABASE_URL_FILE")
    keys = ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")
    if not any(env.get(k) for k in keys):
        return None
    port = env.get("DB_PORT", "5432")
    if not port.isdigit():
        raise ConfigError(f"DB_PORT must be a number, got {port!r}")
    params = {
        "host": env.get("DB_HOST", "localhost"),
        "port": port,
        "dbname": env.get("DB_NAME", "postgres"),
        "user": env.get("DB_USER", "postgres"),
    }
    if env.get("DB_PASSWORD"):
        params["password"] = env["DB_PASSWORD"]
    return make_conninfo(**params)


def database_url_from_file(path: str, origin: str) -> str:
    """The connection string a file holds (the Docker-secrets way: never on a command line).

    Surrounding whitespace, the trailing newline among it, is dropped. Errors name the file,
    never its content.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{origin}: cannot read {path}: {why}") from None
    url = text.strip()
    if not url:
        raise ConfigError(f"{origin}: {path} is empty")
    return checked_url(url, f"the connection string in {path} ({origin})")


def checked_url(url: str, origin: str) -> str:
    """The URL itself when libpq can parse it; a ConfigError that does not quote it otherwise."""
    try:
        conninfo_to_dict(url)
    except Exception:
        raise ConfigError(f"{origin} is not a valid PostgreSQL connection string") from None
    return url


def parse_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9108`` for IPv6) into a pair."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {raw!r}")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """The variable's value (trimmed, lower case) if it is one of ``choices``; the first if unset."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return choices[0]
    if raw not in choices:
        raise ConfigError(f"{name} must be {' or '.join(choices)}, got {env[name]!r}")
    return raw


def _bool(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Overrides:
    """What the command line said; None means: not given."""

    data_dir: str | None = None
    database_url: str | None = None
    database_url_file: str | None = None
    pgdata_dir: str | None = None
    dbt_project_dir: str | None = None
    no_dbt: bool = False
    metrics_addr: str | None = None
    debounce_seconds: float | None = None
    reconcile_seconds: float | None = None
    polling: bool = False
    poll_interval_seconds: float | None = None


def build_settings(overrides: Overrides, env: Mapping[str, str] | None = None) -> Settings:
    """Combine flags and environment into Settings, or raise ConfigError with a clear message."""
    env = os.environ if env is None else env
    if overrides.database_url and overrides.database_url_file:
        raise ConfigError("--database-url and --database-url-file both given: give one of them")
    if overrides.database_url:
        database_url: str | None = checked_url(overrides.database_url, "--database-url")
    elif overrides.database_url_file:
        database_url = database_url_from_file(overrides.database_url_file, "--database-url-file")
    else:
        database_url = database_url_from_env(env)
    landing = (
        overrides.data_dir or env.get("WEARABLE_DATA_DIR") or env.get("PIPELINE_DATA_DIR") or "data_lake"
    )
    bucket_url = bucket_url_of(landing)
    data_dir = Path("data_lake" if bucket_url else landing)
    poll = overrides.poll_interval_seconds
    if poll is None:
        poll = _float(
            env, "WEARABLE_POLL_INTERVAL", BUCKET_POLL_SECONDS if bucket_url else FOLDER_POLL_SECONDS
        )
    if poll <= 0:
        raise ConfigError(f"the poll interval must be more than 0 seconds, got {poll:g}")
    if bucket_url is not None:
        checked_endpoints(bucket_url, env)
    pgdata_dir = Path(overrides.pgdata_dir or env.get("WEARABLE_PGDATA") or ".pgdata")
    dbt_dir = Path(overrides.dbt_project_dir or env.get("WEARABLE_DBT_PROJECT_DIR") or _default_dbt_dir())
    metrics_raw = overrides.metrics_addr or env.get("WEARABLE_METRICS_ADDR") or DEFAULT_METRICS_ADDR
    metrics_addr = None if metrics_raw.lower() in {"off", "none", ""} else parse_host_port(metrics_raw)
    debounce = overrides.debounce_seconds
    reconcile = overrides.reconcile_seconds
    return Settings(
        database_url=database_url,
        data_dir=data_dir.resolve(),
        pgdata_dir=pgdata_dir.resolve(),
        dbt_project_dir=dbt_dir.resolve(),
        run_dbt=not (overrides.no_dbt or _bool(env, "WEARABLE_NO_DBT")),
        dbt_threads=max(1, int(_float(env, "WEARABLE_DBT_THREADS", 4))),
        dbt_tests=_choice(env, "WEARABLE_DBT_TESTS", DBT_TEST_MODES),
        metrics_addr=metrics_addr,
        debounce_seconds=debounce if debounce is not None else _float(env, "WEARABLE_DEBOUNCE_SECONDS", 1.0),
        reconcile_seconds=(
            reconcile if reconcile is not None else _float(env, "WEARABLE_RECONCILE_SECONDS", 60.0)
        ),
        force_polling=overrides.polling or _bool(env, "WEARABLE_POLLING"),
        polling_interval_seconds=poll,
        bucket_url=bucket_url,
        allow_http=bucket_url is not None and endpoint_is_http(bucket_url, env),
        retry_total_seconds=_float(env, "WEARABLE_RETRY_SECONDS", 60.0),
        lock_timeout_seconds=_float(env, "WEARABLE_LOCK_TIMEOUT_SECONDS", 30.0),
        error_budget_fraction=_float(env, "WEARABLE_ERROR_BUDGET_FRACTION", 0.01),
        error_budget_rows=int(_float(env, "WEARABLE_ERROR_BUDGET_ROWS", 1000)),
    )


def bucket_url_of(landing: str) -> str | None:
    """The landing zone's URL when it names a bucket (``s3://BUCKET/PREFIX/``), else None."""
    scheme, sep, rest = landing.partition("://")
    if not sep:
        return None
    if scheme.lower() not in BUCKET_SCHEMES:
        raise ConfigError(
            f"the landing zone {landing!r} is neither a folder nor a bucket URL"
            f" (the schemes known are {', '.join(s + '://' for s in BUCKET_SCHEMES)})"
        )
    if not rest.strip("/"):
        raise ConfigError(f"the bucket URL {landing!r} names no bucket (s3://BUCKET/PREFIX/)")
    return f"{scheme.lower()}://{rest}"


def checked_endpoints(bucket_url: str, env: Mapping[str, str]) -> None:
    """An endpoint variable that is set must be an http(s) URL: the object store's client stops
    the process on anything else (a panic, not an error)."""
    for name in ENDPOINT_VARIABLES.get(bucket_url.partition("://")[0], ()):
        value = env.get(name, "").strip()
        if value and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ConfigError(f"{name} must be an http:// or https:// URL, got {value!r}")


def clear_empty_cloud_variables(env: MutableMapping[str, str] | None = None) -> list[str]:
    """Remove the cloud's variables that are set but empty, and return their names.

    Compose passes a variable that is not set as an empty one; the object store's client, which
    reads these variables itself, takes an empty ``AWS_ENDPOINT_URL`` or ``AWS_ACCESS_KEY_ID`` as
    a value (a URL it cannot parse, a key that signs nothing) instead of falling back to its
    default (AWS itself, the role of the pod or task). Empty means unset, as in a shell.
    """
    env = os.environ if env is None else env
    names = [name for name, value in env.items() if name.startswith(CLOUD_PREFIXES) and not value.strip()]
    for name in names:
        del env[name]
    return names


def endpoint_is_http(bucket_url: str, env: Mapping[str, str]) -> bool:
    """True when the cloud's endpoint variable says plain http (an S3-compatible server such as
    MinIO on a private network): allowed because the URL says so, never otherwise."""
    scheme = bucket_url.partition("://")[0]
    for name in ENDPOINT_VARIABLES.get(scheme, ()):
        value = env.get(name, "").strip()
        if value:
            return value.lower().startswith("http://")
    return False


def _default_dbt_dir() -> Path:
    """The repository's dbt/ folder when run from a checkout, else ./dbt."""
    here = Path(__file__).resolve().parent.parent / "dbt"
    return here if (here / "dbt_project.yml").exists() else Path("dbt")


def log_settings(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(format, level) for logging: WEARABLE_LOG_FORMAT (auto|json|console), WEARABLE_LOG_LEVEL."""
    env = os.environ if env is None else env
    fmt = env.get("WEARABLE_LOG_FORMAT", "auto").strip().lower() or "auto"
    if fmt not in {"auto", "json", "console"}:
        raise ConfigError(f"WEARABLE_LOG_FORMAT must be auto, json or console, got {fmt!r}")
    return fmt, env.get("WEARABLE_LOG_LEVEL", "info")


def secrets_to_hide(settings: Settings, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Passwords that must never reach a log line, a table or /metrics."""
    env = os.environ if env is None else env
    found = []
    if env.get("DB_PASSWORD"):
        found.append(env["DB_PASSWORD"])
    if settings.bucket_url is not None:
        found.extend(env[name] for name in CLOUD_SECRETS if env.get(name))
    if settings.database_url:
        try:
            password = conninfo_to_dict(settings.database_url).get("password")
        except Exception:
            password = None
        if password:
            found.append(str(password))
            found.append(quote(str(password), safe=""))
    return tuple(found)
