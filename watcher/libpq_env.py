"""Hand every libpq parameter of the pipeline's connection string to dbt's connections too.

dbt-postgres connects with psycopg2 and passes only the fields of its profile (host, port, user,
password, dbname, connect_timeout, keepalives_idle, application_name, and a few TLS ones). The
rest of a connection string (``sslrootcert``, ``options``, ``sslcrl``, ``target_session_attrs``,
``sslpassword``, ...) would never reach the server. libpq itself fills what a connection does not
set: first from a service file (``PGSERVICEFILE`` + ``PGSERVICE``), then from its ``PG*``
environment variables. So each parameter goes one of three ways:

- a profile field, for what dbt always passes itself (it would override the other two);
- the ``PG*`` variable libpq names for it (its own table, ``PQconndefaults``);
- a private service file, for the few that have no variable (``sslpassword``, ``keepalives*``).

The pipeline's own connections read the same variables, and get the same values from the URL.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

PROFILE_FIELDS = ("host", "port", "user", "password", "dbname", "connect_timeout", "keepalives_idle")
"""Parameters dbt-postgres passes itself (``application_name`` too; see ``for_dbt``)."""
SERVICE_NAME = "wearable-pipeline-dbt"


class UnsupportedParameter(ValueError):
    """A connection parameter that cannot be handed to dbt's connections."""


@dataclass
class DbtConnection:
    profile: dict[str, str] = field(default_factory=dict)
    """Profile fields by libpq keyword (``dbt/profiles.yml`` reads them as WEARABLE_DBT_*)."""
    environment: dict[str, str] = field(default_factory=dict)
    """``PG*`` variables libpq reads for what a connection does not set."""
    service: dict[str, str] = field(default_factory=dict)
    """Parameters with neither a profile field nor a variable: the service file's lines."""


def libpq_variables() -> dict[str, str]:
    """libpq's own table: keyword -> environment variable, for the keywords that have one."""
    return {
        option.keyword.decode(): option.envvar.decode()
        for option in pq.Conninfo.get_defaults()
        if option.envvar is not None
    }


def for_dbt(conninfo: str) -> DbtConnection:
    """Sort the connection string's parameters into profile fields, variables and service lines."""
    variables = libpq_variables()
    result = DbtConnection()
    for key, value in conninfo_to_dict(conninfo).items():
        if value is None:
            continue
        text = str(value)
        if key in PROFILE_FIELDS or key == "application_name":
            result.profile[key] = text
        elif key in variables:
            result.environment[variables[key]] = text
        else:
            if "\n" in text or "\r" in text:
                raise UnsupportedParameter(f"the connection parameter {key} must be on one line")
            result.service[key] = text
    if result.service and "PGSERVICE" in result.environment:
        raise UnsupportedParameter(
            "a connection string that names a service cannot also give "
            + ", ".join(sorted(result.service))
            + ": put them in the service"
        )
    return result


def write_service_file(params: dict[str, str]) -> dict[str, str]:
    """Write ``params`` as a service of a private file (removed at exit); its two variables."""
    folder = Path(tempfile.mkdtemp(prefix="wearable-pipeline-"))  # mode 0700
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "pg_service.conf"
    lines = [f"[{SERVICE_NAME}]", *(f"{key}={value}" for key, value in params.items())]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return {"PGSERVICEFILE": str(path), "PGSERVICE": SERVICE_NAME}


def dbt_cannot_use_database(name: str) -> str | None:
    """Why dbt cannot build in the database called ``name``, or None when it can.

    dbt-postgres 1.11 writes the database name into SQL without escaping it: between single
    quotes in ``postgres__list_relations_without_caching`` and between double quotes in every
    relation name. A name with either quote loads files, then fails every build with a syntax
    error; so it is refused at start instead (loading alone, ``--no-dbt``, works with any name).
    """
    quotes = [q for q in ("'", '"') if q in name]
    if not quotes:
        return None
    which = " and ".join("a single quote" if q == "'" else "a double quote" for q in quotes)
    return f"the database name {name!r} contains {which}, which dbt cannot build models in"
