"""The report's text, JSON and plot, from constructed marts rows (no database)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path

import pytest

from watcher import report as report_module
from watcher.report import CohortWeek, DecliningUser, Report, as_json_dict, cohort_trend, format_text


def week(number: int, users: int, pct: float | None, degrading: float = 0.25) -> CohortWeek:
    return CohortWeek(
        week_number=number,
        users_observed=users,
        users_active=users,
        mean_pct_of_baseline=pct,
        median_pct_of_baseline=pct,
        share_consistent=0.5,
        share_degrading=degrading,
        share_improving=0.25 - 0.0,
        share_insufficient_data=0.0,
    )


def sample_report() -> Report:
    weeks = [
        week(0, 40, 1.0),
        week(1, 40, 0.98),
        week(2, 38, 0.9),
        week(3, 36, 0.85),
        week(4, 30, 0.8),
        week(5, 4, 0.2),  # too few users to speak for the cohort
    ]
    worst = [
        DecliningUser(4000000001, 0.31, 0.9, 0.28, 5, dt.date(2016, 5, 12)),
        DecliningUser(4000000002, 0.55, 1.1, 0.6, 12, dt.date(2016, 5, 10)),
    ]
    counts = {"consistent": 20, "degrading": 10, "improving": 6, "insufficient_data": 4}
    return Report(counts, weeks, worst)


def test_cohort_trend_compares_weeks_0_1_with_the_last_well_observed_weeks() -> None:
    trend = cohort_trend(sample_report().weeks)
    assert trend is not None
    assert trend.late_weeks == (3, 4)  # week 5 has fewer than half of week 0's users
    assert trend.early_pct == pytest.approx(0.99)
    assert trend.late_pct == pytest.approx((0.85 * 36 + 0.8 * 30) / 66)
    assert trend.change < 0


def test_cohort_trend_needs_four_well_observed_weeks() -> None:
    assert cohort_trend([week(0, 10, 1.0), week(1, 10, 0.9), week(2, 10, 0.8)]) is None
    assert cohort_trend([]) is None
    assert cohort_trend([week(1, 10, 1.0), week(2, 10, 1.0)]) is None


def test_text_has_the_headline_the_classes_the_weeks_and_the_worst_users() -> None:
    text = format_text(sample_report())
    assert text.startswith("Engagement is degrading for 10 of 36 users with enough data (28%).")
    assert "Cohort trend: 99 % of baseline in weeks 0-1, 83 % in weeks 3-4 (down 16 points)." in text
    assert "  degrading              10   25%" in text
    assert "   5      4       4   20 %    20 %        25%" in text
    assert "4000000001  90 % -> 28 % of baseline (ratio 0.31, 5 active days" in text


def test_text_without_classified_users_or_decliners() -> None:
    empty = Report(dict.fromkeys(report_module.TREND_CLASSES, 0), [], [])
    text = format_text(empty)
    assert "No user has enough data for a trend yet." in text
    assert "not enough well-observed weeks" in text
    assert text.rstrip().endswith("none")


def test_json_holds_the_same_answer() -> None:
    data = json.loads(json.dumps(as_json_dict(sample_report())))
    assert data["users"] == 40
    assert data["classes"]["degrading"] == 10
    assert data["cohort_trend"]["late_weeks"] == [3, 4]
    assert len(data["weeks"]) == 6
    assert data["worst_declining"][0] == {
        "user_id": 4000000001,
        "trend_ratio": 0.31,
        "early_pct_of_baseline": 0.9,
        "late_pct_of_baseline": 0.28,
        "late_active_days": 5,
        "last_observed_date": "2016-05-12",
    }


def test_plot_without_matplotlib_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    real_find_spec = importlib.util.find_spec

    def no_matplotlib(name: str, *args: object) -> object:
        return None if name == "matplotlib" else real_find_spec(name)

    monkeypatch.setattr(importlib.util, "find_spec", no_matplotlib)
    code = report_module.run_report(
        "postgresql://nobody@127.0.0.1:1/none", as_json=False, plot_path=tmp_path / "p.png"
    )
    assert code == report_module.EXIT_USAGE
    assert "pip install 'wearable-data-pipeline[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from watcher.report_plot import draw

    path = tmp_path / "trend.png"
    draw(sample_report(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
