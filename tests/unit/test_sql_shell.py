"""What `sql` prints without psql: the connection string, never the password."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict

from watcher.sql_shell import connection_hint, split_password


def test_the_password_is_taken_out_of_the_connection_string() -> None:
    conninfo, password = split_password("postgresql://app:s3cret-pw@db.example:5433/wearable?sslmode=require")
    assert password == "s3cret-pw"
    assert "s3cret-pw" not in conninfo
    params = conninfo_to_dict(conninfo)
    assert (params["host"], params["port"], params["dbname"], params["user"], params["sslmode"]) == (
        "db.example",
        "5433",
        "wearable",
        "app",
        "require",
    )


def test_the_hint_says_to_set_pgpassword_and_never_shows_it() -> None:
    hint = connection_hint("postgresql://app:s3cret-pw@db.example/wearable", embedded=False)
    assert "PGPASSWORD" in hint and "s3cret-pw" not in hint
    embedded = connection_hint("host=/run/wearable dbname=wearable user=postgres", embedded=True)
    assert "PGPASSWORD" not in embedded and "wearable-pipeline watch" in embedded
