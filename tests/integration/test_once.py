"""`watch --once` against a real PostgreSQL: exactly-once loading, replace, duplicates, exit codes."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.helpers import DAILY_HEADER, SLEEP_HEADER, daily_rows, once_json, run_cli, write_csv


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            "daily": conn.execute("SELECT count(*) FROM raw.daily_activity").fetchone()[0],  # type: ignore[index]
            "sleep": conn.execute("SELECT count(*) FROM raw.sleep").fetchone()[0],  # type: ignore[index]
            "loads": conn.execute("SELECT count(*) FROM ops.file_loads").fetchone()[0],  # type: ignore[index]
        }


def manifest_status(url: str) -> dict[str, tuple[str, int, str | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT source_path, status, rows_loaded, error_reason FROM ops.raw_ingest_manifest"
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_second_once_loads_nothing_and_changes_no_count(tmp_path: Path, database_url: str) -> None:
    lake = tmp_path / "lake"
    write_csv(lake / "a" / "dailyActivity_merged.csv", DAILY_HEADER, daily_rows(3, 10))
    write_csv(lake / "sleepDay_merged.csv", SLEEP_HEADER, ["1503960366,4/12/2016 12:00:00 AM,1,327,346"])
    code, first = once_json(lake, database_url, "--no-dbt")
    assert code == 0, first
    assert first["counts"] == {"loaded": 2}
    assert first["rows_loaded"] == 31
    before = counts(database_url)
    code, second = once_json(lake, database_url, "--no-dbt")
    assert code == 0
    assert second["counts"] == {}
    assert counts(database_url) == before == {"daily": 30, "sleep": 1, "loads": 2}


def test_lineage_columns_and_types(tmp_path: Path, database_url: str) -> None:
    lake = tmp_path / "lake"
    write_csv(lake / "dailyActivity_x.csv", DAILY_HEADER, daily_rows(1, 3))
    assert once_json(lake, database_url, "--no-dbt")[0] == 0
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT d.id, d.activity_date::text, l.source_path, d._line_number, l.source_sha256,"
            " l.finished_at IS NOT NULL FROM raw.daily_activity d JOIN ops.file_loads l"
            " ON l.load_id = d._load_id ORDER BY d._line_number"
        ).fetchall()
    assert [r[3] for r in rows] == [2, 3, 4]
    assert rows[0][:3] == (1503960366, "2016-04-12", "dailyActivity_x.csv")
    assert all(len(r[4]) == 64 and r[5] for r in rows)


def _loaded_by_line(url: str) -> list[tuple[int, int, int, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT _line_number, id, total_steps, calories FROM raw.daily_activity ORDER BY 1"
        ).fetchall()
    return [tuple(r) for r in rows]


def _expected_by_line(rows: list[str]) -> list[tuple[int, int, int, int]]:
    cells = [row.replace('"', "").split(",") for row in rows]
    return [(n, int(c[0]), int(c[2]), int(c[14])) for n, c in enumerate(cells, start=2)]


def test_line_numbers_across_blocks_and_a_last_line_without_line_end(
    tmp_path: Path, database_url: str
) -> None:
    """The clean path writes each line's number into the COPY stream, block by block: every row
    keeps its own number wherever the blocks fall, the last line included when no line end
    follows it."""
    lake = tmp_path / "lake"
    rows = daily_rows(40, 250)  # 10,000 rows, about 1.2 MB: many blocks, lines cut between them
    path = write_csv(lake / "dailyActivity_big.csv", DAILY_HEADER, rows)
    path.write_bytes(path.read_bytes().removesuffix(b"\r\n"))
    done = run_cli(["watch", "--once", "--no-dbt", "--data-dir", str(lake)], database_url)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "file_checked_line_by_line" not in done.stderr, "the clean path must have loaded it"
    assert _loaded_by_line(database_url) == _expected_by_line(rows)


@pytest.mark.parametrize("quoted_from", [0, 3000])
def test_quoted_values_load_whichever_block_they_start_in(
    tmp_path: Path, database_url: str, quoted_from: int
) -> None:
    """A file quoted from its first line takes the clean path in CSV format; quotes that only
    start after the first block send the file to the checked path. Same rows either way."""
    lake = tmp_path / "lake"
    rows = daily_rows(10, 400)  # 4,000 rows, about 480 KB
    rows = [
        ",".join(f'"{cell}"' for cell in row.split(",")) if number >= quoted_from else row
        for number, row in enumerate(rows)
    ]
    write_csv(lake / "dailyActivity_quoted.csv", DAILY_HEADER, rows)
    done = run_cli(["watch", "--once", "--no-dbt", "--data-dir", str(lake)], database_url)
    assert done.returncode == 0, done.stderr[-2000:]
    took_clean_path = "file_checked_line_by_line" not in done.stderr
    assert took_clean_path == (quoted_from == 0)
    assert _loaded_by_line(database_url) == _expected_by_line(rows)


def test_each_load_in_one_pass_stamps_its_own_rows(tmp_path: Path, database_url: str) -> None:
    """The load id default is evaluated once per COPY: consecutive loads on one connection must
    not reuse the first one's value."""
    lake = tmp_path / "lake"
    for number in range(4):
        rows = daily_rows(1, 2 + number, first_id=1000000000 + number)
        write_csv(lake / f"dailyActivity_{number}.csv", DAILY_HEADER, rows)
    assert once_json(lake, database_url, "--no-dbt")[0] == 0
    with psycopg.connect(database_url) as conn:
        stamped = conn.execute(
            "SELECT l.source_path, min(d.id), count(*), min(d._line_number), max(d._line_number)"
            " FROM raw.daily_activity d JOIN ops.file_loads l ON l.load_id = d._load_id"
            " GROUP BY l.source_path ORDER BY 1"
        ).fetchall()
    assert stamped == [(f"dailyActivity_{n}.csv", 1000000000 + n, 2 + n, 2, 3 + n) for n in range(4)]


def test_changed_file_replaces_its_rows_and_copy_is_duplicate(tmp_path: Path, database_url: str) -> None:
    lake = tmp_path / "lake"
    path = write_csv(lake / "dailyActivity_merged.csv", DAILY_HEADER, daily_rows(2, 10))
    assert once_json(lake, database_url, "--no-dbt")[0] == 0
    write_csv(path, DAILY_HEADER, daily_rows(2, 7))  # a corrected re-export: fewer days
    code, result = once_json(lake, database_url, "--no-dbt")
    assert code == 0 and result["counts"] == {"loaded": 1}
    assert counts(database_url)["daily"] == 14
    with psycopg.connect(database_url) as conn:
        replaced = conn.execute(
            "SELECT count(*) FROM ops.file_loads WHERE replaces_load_id IS NOT NULL"
        ).fetchone()
    assert replaced == (1,)
    (lake / "copy").mkdir()
    (lake / "copy" / "daily_activity_again.csv").write_bytes(path.read_bytes())
    code, result = once_json(lake, database_url, "--no-dbt")
    assert code == 0
    assert result["counts"] == {"duplicate": 1}
    assert "dailyActivity_merged.csv" in result["files"][0]["reason"]
    assert counts(database_url)["daily"] == 14
    assert manifest_status(database_url)["copy/daily_activity_again.csv"][0] == "duplicate"


def test_touched_file_with_same_content_is_skipped(tmp_path: Path, database_url: str) -> None:
    lake = tmp_path / "lake"
    path = write_csv(lake / "dailyActivity_merged.csv", DAILY_HEADER, daily_rows(1, 5))
    assert once_json(lake, database_url, "--no-dbt")[0] == 0
    path.write_bytes(path.read_bytes())  # new modification time, same bytes
    code, result = once_json(lake, database_url, "--no-dbt")
    assert code == 0 and result["counts"] == {"unchanged": 1}
    assert counts(database_url) == {"daily": 5, "sleep": 0, "loads": 1}


def test_unrouted_hidden_and_temporary_names(tmp_path: Path, database_url: str) -> None:
    lake = tmp_path / "lake"
    write_csv(lake / "hourlySteps_merged.csv", "Id,ActivityHour,StepTotal", ["1,4/12/2016 1:00:00 AM,3"])
    for name in (".dailyActivity.csv", "dailyActivity.csv.part", "dailyActivity.tmp", "~dailyActivity.csv"):
        write_csv(lake / name, DAILY_HEADER, daily_rows(1, 1))
    write_csv(lake / ".hidden" / "dailyActivity.csv", DAILY_HEADER, daily_rows(1, 1))
    code, result = once_json(lake, database_url, "--no-dbt")
    assert code == 0, "an unrouted file is not a failure"
    assert result["counts"] == {"ignored": 1}
    assert "no route" in result["files"][0]["reason"]
    assert counts(database_url)["daily"] == 0


def test_exit_codes_for_rejection_and_configuration(tmp_path: Path, database_url: str) -> None:
    lake = tmp_path / "lake"
    write_csv(lake / "dailyActivity_good.csv", DAILY_HEADER, daily_rows(1, 4))
    write_csv(lake / "dailyActivity_bad.csv", "Id,Foo", ["1,2"])
    code, result = once_json(lake, database_url, "--no-dbt")
    assert code == 1
    assert result["counts"] == {"loaded": 1, "rejected": 1}
    assert (
        "required columns missing" in next(f for f in result["files"] if f["outcome"] == "rejected")["reason"]
    )
    assert counts(database_url)["daily"] == 4
    missing = run_cli(["watch", "--once", "--data-dir", str(tmp_path / "nope")], database_url)
    assert missing.returncode == 2
    bad_env = run_cli(
        ["watch", "--once", "--data-dir", str(lake)],
        database_url,
        extra_env={"WEARABLE_DEBOUNCE_SECONDS": "soon"},
    )
    assert bad_env.returncode == 2 and "WEARABLE_DEBOUNCE_SECONDS" in bad_env.stderr
    unreachable = run_cli(
        ["watch", "--once", "--no-dbt", "--data-dir", str(lake)],
        "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1",
        extra_env={"WEARABLE_RETRY_SECONDS": "1"},
    )
    assert unreachable.returncode == 3


def test_status_lists_files_and_runs(tmp_path: Path, database_url: str) -> None:
    import json

    lake = tmp_path / "lake"
    write_csv(lake / "dailyActivity_merged.csv", DAILY_HEADER, daily_rows(1, 2))
    once_json(lake, database_url, "--no-dbt")
    done = run_cli(["status", "--json", "--data-dir", str(lake)], database_url)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    (entry,) = status["files"]
    assert entry["path"] == "dailyActivity_merged.csv"
    assert entry["status"] == "loaded" and entry["rows_loaded"] == 2 and len(entry["sha256"]) == 64
    assert entry["table"] == "daily_activity" and entry["loaded_at"]
    assert status["runs"][0]["trigger"] == "once" and status["runs"][0]["status"] == "success"
    text = run_cli(["status", "--data-dir", str(lake)], database_url)
    assert "dailyActivity_merged.csv" in text.stdout and "recent runs" in text.stdout


def test_real_fitbit_export_both_periods(tmp_path: Path, database_url: str, fitbit_dir: Path) -> None:
    code, result = once_json(fitbit_dir, database_url, "--no-dbt")
    assert code == 0, result
    outcomes = {f["path"]: f["outcome"] for f in result["files"]}
    assert outcomes == {
        "README.md": "ignored",
        "2016-03-12_2016-04-11/dailyActivity_merged.csv": "loaded",
        "2016-03-12_2016-04-11/hourlySteps_merged.csv": "ignored",
        "2016-04-12_2016-05-12/dailyActivity_merged.csv": "loaded",
        "2016-04-12_2016-05-12/hourlySteps_merged.csv": "ignored",
        "2016-04-12_2016-05-12/sleepDay_merged.csv": "loaded",
    }
    with psycopg.connect(database_url) as conn:
        per_file: dict[str, int] = dict(
            conn.execute(
                "SELECT l.source_path, count(*) FROM raw.daily_activity"
                " JOIN ops.file_loads l ON l.load_id = _load_id GROUP BY 1"
            ).fetchall()
        )
        sleep = conn.execute("SELECT count(*), count(DISTINCT id) FROM raw.sleep").fetchone()
        big_ids = conn.execute("SELECT count(*) FROM raw.daily_activity WHERE id > 2147483647").fetchone()
    assert per_file == {
        "2016-03-12_2016-04-11/dailyActivity_merged.csv": 457,
        "2016-04-12_2016-05-12/dailyActivity_merged.csv": 940,
    }
    assert sleep == (413, 24)
    assert big_ids is not None and big_ids[0] > 0
