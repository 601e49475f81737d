"""Every libpq parameter of the connection string reaches dbt's connections: profile field,
PG* variable, or the private service file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from watcher.libpq_env import SERVICE_NAME, UnsupportedParameter, for_dbt
from watcher.transform import profile_environment

URL = (
    "postgresql://pipeline:pw@db.internal:6432/wearable?sslmode=verify-full&sslrootcert=/certs/ca.pem"
    "&sslcert=/certs/client.pem&sslkey=/certs/client.key&sslpassword=k3y&options=-c%20statement_timeout%3D5s"
    "&target_session_attrs=read-write&sslcrl=/certs/crl.pem&keepalives_interval=7&connect_timeout=4"
    "&application_name=etl"
)


def test_every_parameter_has_a_way_to_dbt() -> None:
    found = for_dbt(URL)
    assert found.profile == {
        "host": "db.internal",
        "port": "6432",
        "user": "pipeline",
        "password": "pw",
        "dbname": "wearable",
        "connect_timeout": "4",
        "application_name": "etl",
    }
    assert found.environment == {
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": "/certs/ca.pem",
        "PGSSLCERT": "/certs/client.pem",
        "PGSSLKEY": "/certs/client.key",
        "PGOPTIONS": "-c statement_timeout=5s",
        "PGTARGETSESSIONATTRS": "read-write",
        "PGSSLCRL": "/certs/crl.pem",
    }
    assert found.service == {"sslpassword": "k3y", "keepalives_interval": "7"}


def test_the_profile_environment_carries_them_all() -> None:
    env = profile_environment(URL, threads=2)
    assert env["WEARABLE_DBT_HOST"] == "db.internal"
    assert env["WEARABLE_DBT_CONNECT_TIMEOUT"] == "4"
    assert env["WEARABLE_DBT_APPLICATION_NAME"] == "etl"
    assert env["PGSSLROOTCERT"] == "/certs/ca.pem"
    assert env["PGOPTIONS"] == "-c statement_timeout=5s"
    assert env["PGSERVICE"] == SERVICE_NAME
    service_file = Path(env["PGSERVICEFILE"])
    assert stat.S_IMODE(service_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(service_file.parent.stat().st_mode) == 0o700
    lines = service_file.read_text().splitlines()
    assert lines[0] == f"[{SERVICE_NAME}]"
    assert sorted(lines[1:]) == ["keepalives_interval=7", "sslpassword=k3y"]


def test_a_plain_connection_needs_no_variables_nor_file() -> None:
    env = profile_environment("host=/run/pg port=5433 dbname=w user=me")
    assert not [k for k in env if k.startswith("PG")]
    assert env["WEARABLE_DBT_CONNECT_TIMEOUT"] == "10"
    assert env["WEARABLE_DBT_KEEPALIVES_IDLE"] == "0"


def test_a_service_and_parameters_without_a_variable_cannot_be_combined() -> None:
    with pytest.raises(UnsupportedParameter, match="sslpassword"):
        for_dbt("service=prod sslpassword=x")
    assert for_dbt("service=prod sslmode=require").environment == {
        "PGSERVICE": "prod",
        "PGSSLMODE": "require",
    }


def test_the_environment_is_not_touched_by_sorting() -> None:
    before = dict(os.environ)
    for_dbt(URL)
    assert dict(os.environ) == before
