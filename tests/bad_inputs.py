"""A corpus of bad inputs, built in the test (nothing downloaded).

Each ``Case`` writes one bad thing into its own folder of a landing zone, next to a good file of
its own content, and says what must become of it: the recorded status, words of the reason, and
for row problems the lines that must reach ``ops.rejected_rows`` (number, exact text, reason).
"""

from __future__ import annotations

import gzip
import io
import os
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import DAILY_HEADER, SLEEP_HEADER

CRLF = b"\r\n"


def daily_line(i: int, *, day: int = 1, month: int = 4) -> bytes:
    """A valid daily-activity line; ``i`` makes it (and the file) distinct."""
    steps = 1000 + 7 * i
    return (
        f"{1503960366 + i},{month}/{day}/2016,{steps},{steps / 1300:.13f},{steps / 1300:.13f},0,"
        f"1.87000000476837,0.550000011920929,6.05999994277954,0,{i % 60},13,328,728,{1500 + i}"
    ).encode()


def daily_lines(seed: int, count: int) -> list[bytes]:
    return [daily_line(seed * 1000 + n, day=1 + n % 28) for n in range(count)]


def sleep_line(i: int) -> bytes:
    return f"{1503960366 + i},4/{1 + i % 28}/2016 12:00:00 AM,1,{300 + i},{330 + i}".encode()


def csv_bytes(header: str, lines: list[bytes], eol: bytes = CRLF, *, final_eol: bool = True) -> bytes:
    body = eol.join([header.encode(), *lines])
    return body + eol if final_eol else body


@dataclass(frozen=True)
class Rejected:
    """A line that must be in ops.rejected_rows: its number, its exact text, words of its reason."""

    line_number: int
    raw_line: str
    reason: str


@dataclass
class Case:
    name: str
    file_name: str
    build: Callable[[Path], None]
    """Writes the bad input at ``folder / file_name`` (whatever it is: file, folder, link...)."""
    status: str
    reason: str | None = None
    """Words that must occur in the recorded reason (``None``: no reason, e.g. loaded)."""
    rows_loaded: int = 0
    rejected: tuple[Rejected, ...] = ()
    warning: str | None = None
    loaded_lines: tuple[int, ...] | None = None
    """When given: exactly these line numbers are in the raw table for the file."""
    table: str = "daily_activity"
    good_rows: int = 5
    extra: dict[str, str] = field(default_factory=dict)

    def relative(self) -> str:
        return f"{self.name}/{self.file_name}"

    def good_relative(self) -> str:
        return f"{self.name}/good_dailyActivity_merged.csv"


def _file(content: bytes) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    return build


def _with_bad_lines(seed: int, bad: dict[int, bytes], count: int = 60, header: str = DAILY_HEADER) -> bytes:
    """``count`` good lines, with ``bad[line_number]`` replacing the line of that number."""
    lines = daily_lines(seed, count)
    for number, raw in bad.items():
        lines[number - 2] = raw
    return csv_bytes(header, lines)


def _rows_case(
    name: str, seed: int, bad: dict[int, bytes], reasons: dict[int, str], count: int = 400
) -> Case:
    """A file of ``count`` rows (within the 1 % budget) where the lines in ``bad`` are bad."""
    rejected = tuple(
        Rejected(n, bad[n].decode("utf-8", "backslashreplace").replace("\x00", "\\x00"), reasons[n])
        for n in sorted(bad)
    )
    loaded = tuple(n for n in range(2, count + 2) if n not in bad)
    return Case(
        name,
        "dailyActivity_merged.csv",
        _file(_with_bad_lines(seed, bad, count)),
        "loaded",
        None,
        rows_loaded=count - len(bad),
        rejected=rejected,
        warning="recorded in ops.rejected_rows",
        loaded_lines=loaded,
    )


def _replace_field(line: bytes, index: int, value: bytes) -> bytes:
    cells = line.split(b",")
    cells[index] = value
    return b",".join(cells)


def row_cases() -> list[Case]:
    """Lines that do not parse: recorded with their reason, the rest of the file loads."""
    base = daily_line
    return [
        _rows_case(
            "row_not_a_number",
            1,
            {5: _replace_field(base(1005), 2, b"abc"), 40: _replace_field(base(1040), 3, b"7,5")},
            {5: "TotalSteps: 'abc' is not a whole number", 40: "expected 15 fields, found 16"},
        ),
        _rows_case(
            "row_impossible_date",
            2,
            {
                7: _replace_field(base(2007), 1, b"2/30/2016"),
                8: _replace_field(base(2008), 1, b"13/1/2016"),
                9: _replace_field(base(2009), 1, b"4/12/20a6"),  # PostgreSQL alone reads 2020-04-12
            },
            {
                7: "ActivityDate: '2/30/2016' is not a valid date",
                8: "'13/1/2016' is not a valid date",
                9: "'4/12/20a6' is not a valid date",
            },
        ),
        _rows_case(
            "row_date_year_outside_1000_to_9999",
            3,
            {
                15: _replace_field(base(3015), 1, b"4/12/201"),  # PostgreSQL reads the year 201
                16: _replace_field(base(3016), 1, b"7/8/20166"),  # and the year 20166
            },
            {15: "'4/12/201' is not a valid date", 16: "'7/8/20166' is not a valid date"},
        ),
        _rows_case(
            "row_wrong_field_count",
            4,
            {3: b",".join(base(4003).split(b",")[:14]), 60: base(4060) + b",1,2"},
            {3: "expected 15 fields, found 14", 60: "expected 15 fields, found 17"},
        ),
        _rows_case(
            "row_unterminated_quote",
            5,
            {10: _replace_field(base(5010), 4, b'"8.5')},
            {10: "a quoted field is never closed"},
        ),
        _rows_case(
            "row_required_value_empty",
            6,
            {11: _replace_field(base(6011), 0, b""), 12: _replace_field(base(6012), 2, b"")},
            {11: "Id is empty but required", 12: "TotalSteps is empty but required"},
        ),
        _rows_case(
            "row_number_out_of_range",
            7,
            {13: _replace_field(base(7013), 2, b"99999999999"), 14: _replace_field(base(7014), 3, b"1e999")},
            {13: "TotalSteps: '99999999999' is out of range for integer", 14: "out of range for double"},
        ),
        _rows_case(
            "row_not_utf8",
            8,
            {15: _replace_field(base(8015), 3, b"8\xe9\xff5")},
            {15: "not UTF-8 text"},
        ),
        _rows_case(
            "row_nul_byte",
            9,
            {16: _replace_field(base(9016), 3, b"8\x005")},
            {16: "NUL byte"},
        ),
        _rows_case(
            "row_repeated_header",
            10,
            {61: DAILY_HEADER.encode()},
            {61: "the header line again"},
        ),
        _rows_case(
            "row_copy_end_marker",
            11,
            {20: b"\\."},
            {20: "expected 15 fields, found 1"},
        ),
        _rows_case(
            "row_stray_carriage_return",
            12,
            {21: _replace_field(base(12021), 3, b"8\r5")},
            {21: "carriage return"},
        ),
        _rows_case(
            "row_spreadsheet_error_values",
            13,
            {
                22: _replace_field(base(13022), 2, b"#VALUE!"),
                23: _replace_field(base(13023), 3, b"N/A"),
                24: _replace_field(base(13024), 1, b"NULL"),
            },
            {
                22: "'#VALUE!' is not a whole number",
                23: "'N/A' is not a number",
                24: "'NULL' is not a valid date",
            },
        ),
    ]


def _mixed_line_ends() -> bytes:
    lines = daily_lines(20, 30)
    body = DAILY_HEADER.encode() + CRLF
    for n, line in enumerate(lines):
        body += line + (b"\n" if n % 3 == 0 else CRLF)
    return body


def _blank_lines() -> bytes:
    lines = daily_lines(21, 30)
    lines[5:5] = [b"", b"   "]
    return csv_bytes(DAILY_HEADER, lines) + CRLF + CRLF


def _quoted_everywhere_with_one_bad() -> bytes:
    lines = [b",".join(b'"' + c + b'"' for c in line.split(b",")) for line in daily_lines(22, 200)]
    lines[4] = _replace_field(lines[4], 2, b'"12x"')
    return csv_bytes(DAILY_HEADER, lines)


def _extra_columns_multiline() -> bytes:
    lines = [line + b",note " + str(n).encode() + b",x" for n, line in enumerate(daily_lines(23, 200))]
    lines[3] = daily_line(23003) + b',"a note\r\nover two lines, with a comma",x'
    lines[7] = _replace_field(daily_line(23007), 2, b"bad") + b",n,x"
    return csv_bytes(DAILY_HEADER + ",Notes,Device", lines)


def _optional_missing() -> bytes:
    lines = [b",".join(line.split(b",")[:3]) for line in daily_lines(24, 20)]
    return csv_bytes("Id,ActivityDate,TotalSteps", lines)


def tolerated_cases() -> list[Case]:
    """Messy but good: everything loads (line numbers as in the file), with a warning where due."""
    return [
        Case(
            "ok_mixed_line_ends",
            "dailyActivity_merged.csv",
            _file(_mixed_line_ends()),
            "loaded",
            rows_loaded=30,
            loaded_lines=tuple(range(2, 32)),
        ),
        Case(
            "ok_blank_lines",
            "dailyActivity_merged.csv",
            _file(_blank_lines()),
            "loaded",
            rows_loaded=30,
            warning="blank lines skipped",
            loaded_lines=(*range(2, 7), *range(9, 34)),
        ),
        Case(
            "ok_no_final_line_end",
            "dailyActivity_merged.csv",
            _file(csv_bytes(DAILY_HEADER, daily_lines(25, 10), final_eol=False)),
            "loaded",
            rows_loaded=10,
            loaded_lines=tuple(range(2, 12)),
        ),
        Case(
            "ok_quoted_fields_one_bad",
            "dailyActivity_merged.csv",
            _file(_quoted_everywhere_with_one_bad()),
            "loaded",
            rows_loaded=199,
            rejected=(
                Rejected(
                    6,
                    _replace_field(
                        b",".join(b'"' + c + b'"' for c in daily_lines(22, 200)[4].split(b",")), 2, b'"12x"'
                    ).decode(),
                    "TotalSteps: '12x' is not a whole number",
                ),
            ),
            loaded_lines=(2, 3, 4, 5, *range(7, 202)),
        ),
        Case(
            "ok_extra_columns",
            "dailyActivity_merged.csv",
            _file(_extra_columns_multiline()),
            "loaded",
            rows_loaded=199,
            warning="extra columns not loaded: Notes, Device",
            rejected=(
                Rejected(
                    10,
                    (_replace_field(daily_line(23007), 2, b"bad") + b",n,x").decode(),
                    "'bad' is not a whole",
                ),
            ),
            loaded_lines=(2, 3, 4, 5, 7, 8, 9, *range(11, 203)),
        ),
        Case(
            "ok_optional_columns_missing",
            "dailyActivity_merged.csv",
            _file(_optional_missing()),
            "loaded",
            rows_loaded=20,
            warning="optional columns missing, loaded as null: TotalDistance",
        ),
        Case(
            "ok_bom_and_lf",
            "dailyActivity_merged.csv",
            _file(b"\xef\xbb\xbf" + csv_bytes(DAILY_HEADER, daily_lines(26, 10), b"\n")),
            "loaded",
            rows_loaded=10,
        ),
        Case(
            "ok_name_quotes_semicolon",
            "dailyActivity 'x'; \"y\"; DROP TABLE raw.daily_activity;--.csv",
            _file(csv_bytes(DAILY_HEADER, daily_lines(27, 10))),
            "loaded",
            rows_loaded=10,
        ),
        Case(
            "ok_name_non_ascii",
            "dailyActivity ünïcødé 日本語 Ω.csv",
            _file(csv_bytes(DAILY_HEADER, daily_lines(28, 10))),
            "loaded",
            rows_loaded=10,
        ),
    ]


def _gzip_csv() -> bytes:
    return gzip.compress(csv_bytes(DAILY_HEADER, daily_lines(40, 10)))


def _xlsx_like() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
    return out.getvalue()


def _binary_garbage() -> bytes:
    rng = random.Random(5)
    return bytes(rng.randrange(256) for _ in range(64 << 10))


def _latin1_everywhere() -> bytes:
    lines = [line + ",Zürich".encode("latin-1") for line in daily_lines(41, 30)]
    return csv_bytes(DAILY_HEADER + ",City", lines)


def _long_line() -> bytes:
    lines = daily_lines(42, 20)
    lines[9] = b"1503960366,4/12/2016," + b"9" * (2 << 20)
    return csv_bytes(DAILY_HEADER, lines)


def _directory(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "inside.txt").write_text("not data\n")


def _link_outside(path: Path) -> None:
    outside = path.parent.parent.parent / "outside" / "dailyActivity_secret.csv"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes(csv_bytes(DAILY_HEADER, daily_lines(43, 10)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(outside)


def _dangling_link(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(path.parent / "no_such_file.csv")


def _link_loop(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    other = path.parent / "loop_b_dailyActivity.csv"
    path.symlink_to(other)
    other.symlink_to(path)


def _fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


def _undecodable_name(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = os.fsencode(path.parent) + b"/dailyActivity_\xff\xfe_export.csv"
    with open(raw, "wb") as out:
        out.write(csv_bytes(DAILY_HEADER, daily_lines(44, 10)))


def file_cases() -> list[Case]:
    """Whole files that cannot load: each ends rejected (or failed, ignored) with one reason."""
    daily = "dailyActivity_merged.csv"
    return [
        Case("file_empty", daily, _file(b""), "rejected", "the file is empty"),
        Case(
            "file_header_only", daily, _file(DAILY_HEADER.encode() + CRLF), "rejected", "header but no rows"
        ),
        Case(
            "file_header_and_blank_lines",
            daily,
            _file(DAILY_HEADER.encode() + CRLF + CRLF + b"  " + CRLF),
            "rejected",
            "header but no rows",
        ),
        Case(
            "file_required_columns_missing",
            daily,
            _file(csv_bytes("Id,TotalDistance,Calories", [b"1,2.5,1800"])),
            "rejected",
            "required columns missing: ActivityDate, TotalSteps",
        ),
        Case(
            "file_header_no_route_understands",
            "sleepDay_merged.csv",
            _file(csv_bytes("Name,Email,Age", [b"Ann,ann@example.org,40"])),
            "rejected",
            "the header names none of the columns of raw.sleep (expected Id, SleepDay, TotalMinutesAsleep)",
            table="sleep",
        ),
        Case(
            "file_semicolon_separated",
            daily,
            _file(csv_bytes(DAILY_HEADER.replace(",", ";"), [b"1;4/12/2016;5"])),
            "rejected",
            "separated by ';'",
        ),
        Case(
            "file_duplicate_columns",
            daily,
            _file(csv_bytes(DAILY_HEADER + ",TotalSteps", [daily_line(45) + b",5"])),
            "rejected",
            "columns appear twice in the header: TotalSteps",
        ),
        Case(
            "file_not_utf8_header",
            daily,
            _file(
                csv_bytes(DAILY_HEADER + ",Région", daily_lines(46, 3)).replace(
                    "Région".encode(), b"R\xe9gion"
                )
            ),
            "rejected",
            "not UTF-8 text",
        ),
        Case(
            "file_not_utf8_rows",
            daily,
            _file(_latin1_everywhere()),
            "rejected",
            "over the error budget of 1.0% (most common: not UTF-8, 30 rows)",
            rejected=(
                Rejected(
                    2,
                    (daily_lines(41, 1)[0] + b",Z\xfcrich").decode("utf-8", "backslashreplace"),
                    "not UTF-8",
                ),
            ),
        ),
        Case(
            "file_utf16",
            daily,
            _file(csv_bytes(DAILY_HEADER, daily_lines(47, 3)).decode().encode("utf-16")),
            "rejected",
            "UTF-16",
        ),
        Case("file_binary_garbage", daily, _file(_binary_garbage()), "rejected", "not a CSV text file"),
        Case("file_gzip", daily, _file(_gzip_csv()), "rejected", "gzip-compressed"),
        Case("file_xlsx_renamed", daily, _file(_xlsx_like()), "rejected", "ZIP archive"),
        Case(
            "file_cr_only_line_ends",
            daily,
            _file(csv_bytes(DAILY_HEADER, daily_lines(48, 5), b"\r")),
            "rejected",
            "bare carriage return",
        ),
        Case(
            "file_first_line_empty",
            daily,
            _file(CRLF + csv_bytes(DAILY_HEADER, daily_lines(49, 3))),
            "rejected",
            "first line is empty",
        ),
        Case(
            "file_line_too_long",
            daily,
            _file(_long_line()),
            "rejected",
            "line 11 is longer than 1,048,576 bytes",
        ),
        Case(
            "file_all_rows_bad",
            daily,
            _file(csv_bytes(DAILY_HEADER, [_replace_field(x, 2, b"?") for x in daily_lines(50, 8)])),
            "rejected",
            "8 of 8 rows are bad",
        ),
        Case(
            "file_over_budget",
            daily,
            _file(
                _with_bad_lines(
                    51, {n: _replace_field(daily_line(51000 + n), 2, b"x") for n in (3, 9, 27)}, 100
                )
            ),
            "rejected",
            "3 of 100 rows are bad (3.0%), over the error budget of 1.0%",
            rejected=(
                Rejected(3, _replace_field(daily_line(51003), 2, b"x").decode(), "'x' is not a whole number"),
            ),
        ),
        Case(
            "file_directory_named_csv",
            "dailyActivity_folder.csv",
            _directory,
            "rejected",
            "a directory, not a file",
        ),
        Case(
            "file_link_outside",
            "dailyActivity_link.csv",
            _link_outside,
            "rejected",
            "a link that leads outside the data lake; not followed",
        ),
        Case(
            "file_dangling_link",
            "dailyActivity_dangling.csv",
            _dangling_link,
            "rejected",
            "does not lead to a regular file",
        ),
        Case("file_link_loop", "loop_a_dailyActivity.csv", _link_loop, "rejected", "cannot be followed"),
        Case("file_fifo", "dailyActivity_pipe.csv", _fifo, "rejected", "not a regular file"),
        Case(
            "file_name_not_utf8",
            "dailyActivity_\\xff\\xfe_export.csv",
            _undecodable_name,
            "rejected",
            "the file name is not valid UTF-8",
        ),
        Case(
            "file_no_route",
            "heartrate_seconds_merged.csv",
            _file(b"Id,Time,Value\r\n1,4/12/2016 7:21:00 AM,97\r\n"),
            "ignored",
            "no route matches this file name",
        ),
    ]


def all_cases() -> list[Case]:
    return [*row_cases(), *tolerated_cases(), *file_cases()]


def build_lake(lake: Path, cases: list[Case]) -> None:
    """Every case in its own folder, each beside a good file of its own content."""
    for number, case in enumerate(cases):
        folder = lake / case.name
        case.build(folder / case.file_name)
        good = csv_bytes(DAILY_HEADER, daily_lines(500 + number, case.good_rows))
        (folder / "good_dailyActivity_merged.csv").write_bytes(good)


def sleep_file(lines: int, seed: int = 0) -> bytes:
    return csv_bytes(SLEEP_HEADER, [sleep_line(seed * 1000 + n) for n in range(lines)])
