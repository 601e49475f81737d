"""What is retried: only what can heal by waiting (the one classifier, ``retry.is_transient``)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from watcher.database import connection_hint
from watcher.retry import is_transient

PREFIX = 'connection failed: connection to server at "db", port 5432 failed: '


@pytest.mark.parametrize(
    "message",
    [
        PREFIX + "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
        PREFIX + "server closed the connection unexpectedly",
        "connection timeout expired",
        'connection failed: could not translate host name "db" to address: Name or service not known',
        PREFIX + "FATAL:  the database system is starting up",
        PREFIX + "FATAL:  the database system is shutting down",
        PREFIX + "FATAL:  sorry, too many clients already",
        PREFIX + "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
        "consuming input failed: FATAL:  terminating connection due to administrator command",
    ],
)
def test_faults_that_heal_by_waiting_are_retried(message: str) -> None:
    assert is_transient(psycopg.OperationalError(message))


@pytest.mark.parametrize(
    "message",
    [
        PREFIX + 'FATAL:  database "wearabel" does not exist',
        PREFIX + 'FATAL:  role "pipline" does not exist',
        PREFIX + 'FATAL:  password authentication failed for user "pipeline"',
        PREFIX + 'FATAL:  no pg_hba.conf entry for host "10.0.0.5", user "p", database "w", no encryption',
        PREFIX + "fe_sendauth: no password supplied",
        PREFIX + 'root certificate file "/home/analyst/.postgresql/root.crt" does not exist',
        PREFIX + "SSL error: certificate verify failed",
        PREFIX + "server does not support SSL, but SSL was required",
    ],
)
def test_a_wrong_setting_is_not_retried(message: str) -> None:
    error = psycopg.OperationalError(message)
    assert not is_transient(error)
    assert connection_hint(error) != connection_hint(psycopg.OperationalError("something else"))


def test_errors_with_a_sqlstate_follow_their_class() -> None:
    assert is_transient(errors.AdminShutdown("terminating connection due to administrator command"))
    assert is_transient(errors.SerializationFailure("could not serialize access"))
    assert is_transient(errors.DeadlockDetected("deadlock detected"))
    assert is_transient(errors.TooManyConnections("too many connections"))
    assert not is_transient(errors.DatabaseDropped("database dropped"))
    assert not is_transient(errors.DiskFull("could not extend file"))
    assert not is_transient(errors.UndefinedTable("relation does not exist"))
    assert not is_transient(ValueError("not a database error"))


def test_hints_name_what_is_wrong() -> None:
    assert "password" in connection_hint(
        psycopg.OperationalError(PREFIX + "FATAL:  password authentication failed")
    )
    assert "database" in connection_hint(
        psycopg.OperationalError(PREFIX + 'FATAL:  database "x" does not exist')
    )
    assert "user" in connection_hint(psycopg.OperationalError(PREFIX + 'FATAL:  role "x" does not exist'))
    assert "sslrootcert" in connection_hint(psycopg.OperationalError(PREFIX + "certificate verify failed"))
