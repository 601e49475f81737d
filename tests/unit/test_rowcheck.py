"""rowcheck: splitting records the way PostgreSQL does, and the verdict on each value."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.routes import DAILY_ACTIVITY, SLEEP, Column, ColumnType
from watcher.rowcheck import (
    UNSURE,
    Checked,
    Field,
    RowError,
    check_field,
    check_record,
    csv_line,
    plain_line_pattern,
    plain_lines_pattern,
    projection,
    quote_count_is_odd,
    split_record,
)

STEPS = Column("total_steps", "TotalSteps", ColumnType.INTEGER)
ID = Column("id", "Id", ColumnType.BIGINT)
DIST = Column("total_distance", "TotalDistance", ColumnType.DOUBLE, required=False)
DAY = Column("activity_date", "ActivityDate", ColumnType.DATE)
CALORIES = Column("calories", "Calories", ColumnType.INTEGER, required=False)
FITBIT_LINE = b"1503960366,4/12/2016,13162,8.5,8.5,0,1.87999999523163,0.550000011920929,6.05999994277954,0,25,13,328,728,1985"


def verdict(text: str, column: Column, quoted: bool = False) -> str | None:
    result = check_field(Field(text, quoted), column)
    return result.kind if isinstance(result, RowError) else result


def test_split_reads_like_postgresql() -> None:
    assert split_record('1,"a,b",c"d,e"f,,""') == [
        Field("1", False),
        Field("a,b", True),
        Field("cd,ef", True),
        Field("", False),
        Field("", True),
    ]
    assert split_record('"say ""hi""",x') == [Field('say "hi"', True), Field("x", False)]
    assert split_record('"a\r\nb",1') == [Field("a\r\nb", True), Field("1", False)]
    assert split_record("") == [Field("", False)]
    unterminated = split_record('1,"abc')
    assert isinstance(unterminated, RowError) and unterminated.kind == "unterminated quote"


def test_only_an_unquoted_empty_field_is_null() -> None:
    assert Field("", False).is_null
    assert not Field("", True).is_null
    assert not Field(" ", False).is_null


@pytest.mark.parametrize(
    ("text", "column", "expected"),
    [
        ("13162", STEPS, None),
        (" +13162 ", STEPS, None),
        ("-0", STEPS, None),
        ("2147483647", STEPS, None),
        ("2147483648", STEPS, "number out of range"),
        ("9223372036854775807", ID, None),
        ("9223372036854775808", ID, "number out of range"),
        ("1 2", STEPS, "not a whole number"),
        ("12.0", STEPS, "not a whole number"),
        ("abc", STEPS, "not a whole number"),
        ("\uff11\uff12", STEPS, "not a whole number"),  # full-width digits: Python's int() reads them
        ("1_000", STEPS, UNSURE),  # PostgreSQL 16 reads it, 15 does not
        ("0x1F", STEPS, UNSURE),
        (" ", STEPS, "not a whole number"),
        ("8.5", DIST, None),
        ("1e5", DIST, None),
        (".5", DIST, None),
        ("5.", DIST, None),
        ("-2.5E-3", DIST, None),
        ("NaN", DIST, None),
        ("-Infinity", DIST, None),
        ("inf", DIST, None),
        ("1e999", DIST, "number out of range"),
        ("1e-999", DIST, "number out of range"),
        ("0e-999", DIST, None),
        ("0x1p3", DIST, UNSURE),
        ("1,5", DIST, "not a number"),
        ("N/A", DIST, "not a number"),
        ("1_0.5", DIST, "not a number"),
        ("", DIST, None),
        ("4/12/2016", DAY, None),
        ("04/12/2016", DAY, None),
        ("4/12/2016 12:00:00 AM", DAY, None),
        ("4/12/2016 11:59 pm", DAY, None),
        ("2016-04-12", DAY, None),
        ("2016-04-12T23:10:00", DAY, None),
        ("2/29/2016", DAY, None),
        ("2/29/2015", DAY, "not a valid date"),
        ("2/30/2016", DAY, "not a valid date"),
        ("13/1/2016", DAY, "not a valid date"),
        ("4/31/2016", DAY, "not a valid date"),
        ("4/12/2016 13:00 PM", DAY, "not a valid date"),
        ("4/12/2016 12:60", DAY, "not a valid date"),
        ("4/12/20a6", DAY, "not a valid date"),
        ("4/12/201", DAY, "not a valid date"),
        ("4/12/0999", DAY, "not a valid date"),
        ("7/8/20166", DAY, "not a valid date"),
        ("today", DAY, "not a valid date"),
        ("12-Apr-2016", DAY, "not a valid date"),
    ],
)
def test_field_verdicts(text: str, column: Column, expected: str | None) -> None:
    assert verdict(text, column) == expected


def test_empty_values() -> None:
    assert verdict("", STEPS) == "required value empty"
    assert verdict("", CALORIES) is None
    assert verdict("", CALORIES, quoted=True) == "not a whole number"  # "" is text, not NULL


def test_reasons_name_the_column_and_show_the_value() -> None:
    result = check_field(Field("abc", False), STEPS)
    assert isinstance(result, RowError)
    assert result.reason == "TotalSteps: 'abc' is not a whole number"
    long_value = check_field(Field("x" * 100, False), STEPS)
    assert isinstance(long_value, RowError) and len(long_value.reason) < 100


def test_check_record_counts_fields_and_keeps_the_texts() -> None:
    columns = (ID, DAY, None, STEPS)
    fields = split_record('1503960366, 4/12/2016 ,whatever,"12"')
    assert isinstance(fields, list)
    assert check_record(fields, columns) == Checked(("1503960366", "4/12/2016", "12"), False)
    wrong = check_record(fields[:3], columns)
    assert isinstance(wrong, RowError) and wrong.reason == "expected 4 fields, found 3"


def test_csv_line_keeps_null_and_empty_apart() -> None:
    assert csv_line(("1", None, "", 'a"b')) == '"1",,"","a""b"'


def test_the_plain_pattern_takes_the_fitbit_lines() -> None:
    single = re.compile(plain_line_pattern(DAILY_ACTIVITY.columns, b"\r\n"))
    assert single.fullmatch(FITBIT_LINE + b"\r\n")
    assert not single.fullmatch(FITBIT_LINE + b"\n")  # another line end: checked one by one
    quoted = b",".join(b'"' + cell + b'"' for cell in FITBIT_LINE.split(b","))
    assert single.fullmatch(quoted + b"\r\n")  # some tools quote every field
    assert not re.compile(plain_line_pattern(DAILY_ACTIVITY.columns, b"\r\n", common=True)).fullmatch(
        quoted + b"\r\n"
    )
    sleep = re.compile(plain_line_pattern(SLEEP.columns, b"\n"))
    assert sleep.fullmatch(b"1503960366,4/12/2016 12:00:00 AM,1,327,346\n")
    run = plain_lines_pattern(DAILY_ACTIVITY.columns, b"\r\n")
    text = (FITBIT_LINE + b"\r\n") * 3 + b"x" + FITBIT_LINE + b"\r\n"
    match = run.match(text)
    assert match is not None and match.end() == 3 * (len(FITBIT_LINE) + 2)


@pytest.mark.parametrize(
    "bad",
    [
        FITBIT_LINE.replace(b"13162", b"1316x"),
        FITBIT_LINE.replace(b"4/12/2016", b"2/30/2016"),
        FITBIT_LINE.replace(b"4/12/2016", b"2/29/2015"),
        FITBIT_LINE.replace(b"4/12/2016", b"4/12/0999"),
        FITBIT_LINE.replace(b"13162", b"2147483648"),
        FITBIT_LINE.replace(b"1503960366", b""),
        FITBIT_LINE.replace(b",1985", b""),
        FITBIT_LINE.replace(b"8.5", b'""', 1),  # an empty text is no number (and no NULL)
        FITBIT_LINE.replace(b"8.5", b'"8.5', 1),
        FITBIT_LINE.replace(b"8.5", b"8.5\xff", 1),
    ],
)
def test_the_plain_pattern_never_takes_a_doubtful_line(bad: bytes) -> None:
    assert not re.compile(plain_line_pattern(DAILY_ACTIVITY.columns, b"\n")).fullmatch(bad + b"\n")


def test_projection_drops_extra_columns_in_c() -> None:
    columns = (ID, None, STEPS)
    pattern, template = projection(columns, b"\r\n")
    assert pattern.sub(template, b"1,extra,5\r\n2,,6\r\n") == b"1,5\r\n2,6\r\n"


def test_quote_parity() -> None:
    assert quote_count_is_odd(b'1,"abc\n')
    assert not quote_count_is_odd(b'1,"a""b",2\n')


_PLAIN_VALUES = {
    ColumnType.BIGINT: st.integers(-(10**17), 10**17).map(str),
    ColumnType.INTEGER: st.integers(-(10**8), 10**8).map(str),
    ColumnType.DOUBLE: st.floats(allow_nan=False, allow_infinity=False, min_value=-1e20, max_value=1e20).map(
        lambda f: f"{f:.10f}"
    ),
    ColumnType.DATE: st.dates().filter(lambda d: d.year >= 1000).map(lambda d: f"{d.month}/{d.day}/{d.year}"),
}


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.data())
def test_whatever_the_plain_pattern_takes_the_checker_accepts(data: st.DataObject) -> None:
    columns = DAILY_ACTIVITY.columns
    texts = [
        data.draw(_PLAIN_VALUES[c.type]) if c.required or data.draw(st.booleans()) else "" for c in columns
    ]
    line = ",".join(texts).encode()
    assert re.compile(plain_line_pattern(columns, b"\n")).fullmatch(line + b"\n")
    fields = split_record(line.decode())
    assert isinstance(fields, list)
    assert isinstance(check_record(fields, columns), Checked)
