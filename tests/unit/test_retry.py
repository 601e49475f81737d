"""What is retried: only what can heal by waiting (the one classifier, ``retry.is_transient``)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from watcher.database import connection_hint
from watcher.retry import TRANSIENT_SERVER_ANSWERS, is_transient, is_transient_message, transient_line

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


@pytest.mark.parametrize(
    "text",
    [
        "Database Error in model x (models/x.sql)\n  canceling statement due to lock timeout\n  compiled code at ...",
        "could not serialize access due to concurrent update",
        "deadlock detected",
        "FATAL:  terminating connection due to administrator command",
        "FATAL:  terminating connection due to idle-session timeout",
        "FATAL:  the database system is in recovery mode",
        "FATAL:  sorry, too many clients already",
        'FATAL:  too many connections for role "pipeline"',
        "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally",
        "connection already closed",
        'connection to server on socket "/run/pg/.s.PGSQL.5432" failed: No such file or directory',
    ],
)
def test_error_texts_that_heal_by_waiting(text: str) -> None:
    """dbt's errors carry text only: the words decide, and the line that names the fault is kept."""
    line = transient_line(text)
    assert line is not None and line in text
    assert is_transient_message(text)


@pytest.mark.parametrize(
    "text",
    [
        'relation "raw.daily_activity" does not exist',
        'column "steps" does not exist',
        "division by zero",
        'FATAL:  password authentication failed for user "pipeline"',
        "could not extend file: No space left on device",
        "",
        None,
    ],
)
def test_error_texts_that_do_not_heal(text: str | None) -> None:
    assert transient_line(text) is None
    assert not is_transient_message(text)


@pytest.mark.parametrize("answer", TRANSIENT_SERVER_ANSWERS)
def test_every_server_answer_retried_on_connect_is_transient_text_too(answer: str) -> None:
    """One vocabulary: an answer that a connection retries is a transient fault in dbt's text."""
    assert is_transient(psycopg.OperationalError(f"{PREFIX}FATAL:  {answer}"))
    assert is_transient_message(f"FATAL:  {answer}")
