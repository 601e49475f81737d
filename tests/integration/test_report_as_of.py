"""`report` starts with "data as of": the newest loaded file and the last good build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.daemon_helpers import finished_runs
from tests.helpers import DAILY_HEADER, daily_rows, once_json, run_cli, write_csv


@pytest.mark.slow
def test_report_says_what_its_numbers_stand_on(migrated_url: str, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_csv(lake / "first" / "dailyActivity_merged.csv", DAILY_HEADER, daily_rows(3, 30))
    code, _ = once_json(lake, migrated_url)
    assert code == 0
    built = [r for r in finished_runs(migrated_url) if r["dbt_status"] == "success"]
    assert len(built) == 1

    done = run_cli(["report", "--data-dir", str(lake)], migrated_url)
    assert done.returncode == 0, done.stderr[-2000:]
    first = done.stdout.splitlines()[0]
    assert first.startswith("Data as of ")
    assert "newest file first/dailyActivity_merged.csv" in first
    assert "last good build" in first and f"(run #{built[0]['run_id']})" in first
    assert "not in these numbers yet" not in first

    write_csv(
        lake / "second" / "dailyActivity_merged.csv", DAILY_HEADER, daily_rows(1, 30, first_id=1624580081)
    )
    assert once_json(lake, migrated_url, "--no-dbt")[0] == 0
    done = run_cli(["report", "--json", "--data-dir", str(lake)], migrated_url)
    assert done.returncode == 0, done.stderr[-2000:]
    as_of = json.loads(done.stdout)["data_as_of"]
    assert as_of["newest_file"] == "second/dailyActivity_merged.csv"
    assert as_of["last_good_build_run"] == built[0]["run_id"]
    assert as_of["files_loaded_since_build"] == 1
    text = run_cli(["report", "--data-dir", str(lake)], migrated_url).stdout
    assert "1 file(s) loaded since are not in these numbers yet" in text.splitlines()[0]
