"""The checked path's verdicts agree with PostgreSQL: what Python lets through, the server takes;
a number Python calls bad, the server refuses too; what the server refuses, Python never passes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from watcher.routes import Column, ColumnType
from watcher.rowcheck import UNSURE, Field, RowError, check_field

COLUMNS = {
    ColumnType.BIGINT: Column("id", "Id", ColumnType.BIGINT),
    ColumnType.INTEGER: Column("total_steps", "TotalSteps", ColumnType.INTEGER),
    ColumnType.DOUBLE: Column("total_distance", "TotalDistance", ColumnType.DOUBLE),
    ColumnType.DATE: Column("activity_date", "ActivityDate", ColumnType.DATE),
}
ALPHABET = {
    ColumnType.BIGINT: "0123456789+- _xXabcf.e\t",
    ColumnType.INTEGER: "0123456789+- _x.e\t",
    ColumnType.DOUBLE: "0123456789+-. eEinfaNIty_x(p\t",
    ColumnType.DATE: "0123456789/-: TAPMapm.x",
}


@pytest.fixture(scope="module")
def server(pg_admin_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute("SET DateStyle = 'ISO, MDY'")
        yield conn


def server_reads(conn: psycopg.Connection[Any], text: str, kind: ColumnType) -> bool:
    """True when PostgreSQL takes the text as a value of the type (a date: within years 1000-9999)."""
    query = (
        sql.SQL("SELECT %s::date BETWEEN '1000-01-01' AND '9999-12-31'")
        if kind is ColumnType.DATE
        else sql.SQL("SELECT %s::{} IS NOT NULL").format(sql.SQL(kind.value))  # a type name of our enum
    )
    try:
        with conn.transaction():
            row = conn.execute(query, (text,)).fetchone()
    except psycopg.DataError:
        return False
    return bool(row and row[0])


def agree(conn: psycopg.Connection[Any], text: str, kind: ColumnType) -> None:
    verdict = check_field(Field(text, quoted=True), COLUMNS[kind])
    accepted = server_reads(conn, text, kind)
    if verdict is None:
        assert accepted, f"Python passes {text!r} for {kind.value}, PostgreSQL refuses it"
    elif isinstance(verdict, RowError) and kind is not ColumnType.DATE:
        assert not accepted, (
            f"Python refuses {text!r} for {kind.value} ({verdict.reason}), PostgreSQL reads it"
        )
    else:
        assert verdict == UNSURE or isinstance(verdict, RowError)


CURATED = {
    ColumnType.INTEGER: [
        "0",
        "-0",
        "+7",
        " 7 ",
        "\t7\n",
        "2147483647",
        "2147483648",
        "-2147483648",
        "1_000",
        "1e3",
    ],
    ColumnType.BIGINT: ["9223372036854775807", "9223372036854775808", "0x10", "00012", "1 2"],
    ColumnType.DOUBLE: [
        "1e308",
        "1e309",
        "1e-320",
        "1e-400",
        "NaN",
        "-inf",
        "+Infinity",
        "infinity",
        "nan(1)",
        "0x1p3",
        ".",
        "-.5",
        "5.",
        "1e",
        "e1",
        " 8.5 ",
        "1.5e+00",
    ],
    ColumnType.DATE: [
        "4/12/2016",
        "2/29/2016",
        "2/29/2015",
        "4/12/2016 24:00:00",
        "4/12/2016 24:00:01",
        "4/12/2016 12:00:60",
        "4/12/2016 0:00 AM",
        "2016-04-12T10:00",
        "9999-12-31",
        "1000-01-01",
        "4/12/2016 12:00:00AM",
        "4/12/2016 11:59:59.99 PM",
    ],
}


@pytest.mark.parametrize(
    ("kind", "text"), [(kind, text) for kind, texts in CURATED.items() for text in texts]
)
def test_curated_values_agree(server: psycopg.Connection[Any], kind: ColumnType, text: str) -> None:
    agree(server, text, kind)


PLAUSIBLE = {
    ColumnType.BIGINT: st.integers(-(2**64), 2**64).map(str),
    ColumnType.INTEGER: st.integers(-(2**32), 2**32).map(str),
    ColumnType.DOUBLE: st.one_of(
        st.floats().map(repr),
        st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"{f:e}"),
        st.tuples(st.integers(0, 99999), st.integers(-400, 400)).map(lambda t: f"{t[0]}e{t[1]}"),
    ),
    ColumnType.DATE: st.tuples(
        st.integers(0, 14),
        st.integers(0, 33),
        st.integers(0, 12000),
        st.sampled_from(["", " 12:00:00 AM", " 7:05", "T23:59:59"]),
    ).map(lambda t: f"{t[0]}/{t[1]}/{t[2]:04d}{t[3]}"),
}


@pytest.mark.parametrize("kind", list(ColumnType), ids=[k.name for k in ColumnType])
def test_random_values_agree(server: psycopg.Connection[Any], kind: ColumnType) -> None:
    noise = st.text(ALPHABET[kind], min_size=1, max_size=14)

    @settings(max_examples=300, deadline=None, database=None)
    @given(text=st.one_of(noise, PLAUSIBLE[kind], st.tuples(PLAUSIBLE[kind], noise).map("".join)))
    def check(text: str) -> None:
        agree(server, text, kind)

    check()
