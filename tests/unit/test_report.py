"""The report's text, JSON and plot, from constructed marts rows (no database)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path

import pytest

from watcher import report as report_module
from watcher.report import (
    CohortWeek,
    DecliningUser,
    Level,
    Report,
    TableQuality,
    as_json_dict,
    cohort_trend,
    format_text,
    latest_reliable_week,
    trend_weeks,
)

MIN_USERS = 10


def week(
    number: int,
    users: int,
    pct: float | None,
    degrading: float = 0.25,
    *,
    median: float | None = None,
    iqr: tuple[float, float] = (0.7, 1.2),
) -> CohortWeek:
    return CohortWeek(
        week_number=number,
        users_observed=users,
        users_active=users,
        mean_pct_of_baseline=pct,
        median_pct_of_baseline=pct if median is None else median,
        p25_pct_of_baseline=iqr[0],
        p75_pct_of_baseline=iqr[1],
        is_reliable=users >= MIN_USERS,
        reliable_min_users=MIN_USERS,
        share_consistent=0.5,
        share_degrading=degrading,
        share_improving=0.25,
        share_insufficient_data=0.0,
    )


# each user's weekly percent of baseline in the weeks the trend compares: the median falls from
# 1.0 to 0.8 while two users far above baseline pull the mean up
EARLY = [0.9, 1.0, 1.1] * 4
LATE = [0.6, 0.7, 0.8, 0.8, 0.9, 3.0, 4.0] + [0.8] * 3


def sample_report(trend_values: dict[int, list[float]] | None = None) -> Report:
    weeks = [
        week(0, 40, 1.0),
        week(1, 40, 0.98),
        week(2, 38, 0.9),
        week(3, 36, 1.2, median=0.8),
        week(4, 30, 1.1, median=0.8, iqr=(0.65, 0.95)),
        week(5, 4, 0.2),  # too few users to speak for the cohort
    ]
    worst = [
        DecliningUser(4000000001, 0.31, 0.9, 0.28, 5, dt.date(2016, 5, 12)),
        DecliningUser(4000000002, 0.55, 1.1, 0.6, 12, dt.date(2016, 5, 10)),
    ]
    counts = {"consistent": 20, "degrading": 10, "improving": 6, "insufficient_data": 4}
    if trend_values is None:
        trend_values = {0: EARLY[:6], 1: EARLY[6:], 3: LATE[:5], 4: LATE[5:]}
    quality = [
        TableQuality("daily_activity", 1397, 1373, 24, 0, 0, 21),
        TableQuality("sleep", 413, 410, 0, 3, 0, None),
    ]
    return Report(counts, weeks, worst, trend_values, quality)


def test_level_quartiles_interpolate_like_percentile_cont() -> None:
    level = Level.of([0.5, 0.75, 1.0, 1.25])
    assert (level.p25, level.median, level.p75) == (0.6875, 0.875, 1.0625)
    assert level.mean == 0.875
    assert Level.of([0.4]) == Level(0.4, 0.4, 0.4, 0.4, 1)


def test_the_headline_week_is_the_latest_reliable_one() -> None:
    weeks = sample_report().weeks
    latest = latest_reliable_week(weeks)
    assert latest is not None and latest.week_number == 4  # week 5 has 4 users
    assert latest_reliable_week([week(0, 3, 1.0), week(1, 1, 0.5)]) is None


def test_trend_compares_weeks_0_1_with_the_last_two_reliable_weeks() -> None:
    assert trend_weeks(sample_report().weeks) == ((0, 1), (3, 4))
    trend = cohort_trend(sample_report().weeks, sample_report().trend_values)
    assert trend is not None
    assert trend.early.median == pytest.approx(1.0)
    assert trend.late.median == pytest.approx(0.8)
    assert trend.late.mean == pytest.approx(sum(LATE) / len(LATE))
    assert trend.median_change < 0 < trend.mean_change
    assert trend.disagree


def test_trend_needs_four_reliable_weeks_including_0_and_1() -> None:
    assert trend_weeks([week(0, 10, 1.0), week(1, 10, 0.9), week(2, 10, 0.8)]) is None
    assert trend_weeks([]) is None
    assert trend_weeks([week(0, 10, 1.0), week(1, 3, 1.0), week(2, 10, 1.0), week(3, 10, 1.0)]) is None
    assert cohort_trend([], {}) is None


def test_text_headlines_the_latest_reliable_week_with_median_and_iqr() -> None:
    text = format_text(sample_report())
    lines = text.splitlines()
    assert lines[0] == "Engagement is degrading for 10 of 36 users with enough data (28%)."
    assert lines[1] == (
        "Cohort level, week 4 (the latest reliable week, 30 users): median 80 % of baseline"
        " (IQR 65-95 %), mean 110 %."
    )
    assert "week 5 (" not in lines[1]
    assert "   5      4       4    20 %   70-120 %    20 %        25%  (too few users)" in text
    assert "   4     30      30    80 %    65-95 %   110 %        25%" in text
    assert "(too few users: fewer than 10; such a week is never headlined)" in text
    assert "  degrading              10   25%" in text
    assert "4000000001  90 % -> 28 % of baseline (ratio 0.31, 5 active days" in text


def test_text_says_when_mean_and_median_move_in_opposite_directions() -> None:
    line = format_text(sample_report()).splitlines()[2]
    assert line.startswith(
        "Cohort trend, weeks 0-1 to weeks 3-4: mean and median move in opposite directions:"
    )
    assert "the median went from 100 % (IQR 90-110 %) to 80 % (IQR 80-88 %), down 20 points" in line
    assert "the mean from 100 % to 132 %, up 32 points" in line
    assert "pull the mean up; neither figure alone is the answer." in line


def test_text_when_mean_and_median_agree() -> None:
    values = {0: [1.0] * 6, 1: [1.0] * 6, 3: [0.8] * 5, 4: [0.7] * 5}
    line = format_text(sample_report(values)).splitlines()[2]
    assert "opposite" not in line
    assert line == (
        "Cohort trend, weeks 0-1 to weeks 3-4: the median went from 100 % (IQR 100-100 %) to"
        " 75 % (IQR 70-80 %), down 25 points; the mean from 100 % to 75 %, down 25 points."
    )


def test_text_without_reliable_weeks_classified_users_or_decliners() -> None:
    empty = Report(dict.fromkeys(report_module.TREND_CLASSES, 0), [], [])
    text = format_text(empty)
    assert "No user has enough data for a trend yet." in text
    assert "no week is seen by enough users to speak for the cohort yet" in text
    assert "not enough reliable weeks" in text
    assert "Worst-declining users (last 14 days against the first 14):\n  none" in text
    assert text.rstrip().endswith("no rows yet")
    thin = Report(empty.class_counts, [week(0, 3, 1.0)], [])
    assert "no week is seen by enough users (at least 10)" in format_text(thin)


def test_text_says_what_was_left_out_of_each_table() -> None:
    lines = format_text(sample_report()).splitlines()
    assert lines[-3:] == [
        "Data quality (raw rows left out of the answer, and why):",
        "  daily_activity: 1397 rows, 1373 kept; 24 superseded by a newer export, 0 exact duplicates"
        " collapsed, 0 conflicting in one file; 21 partial days left out",
        "  sleep: 413 rows, 410 kept; 0 superseded by a newer export, 3 exact duplicates collapsed,"
        " 0 conflicting in one file",
    ]


def test_json_holds_the_same_answer() -> None:
    data = json.loads(json.dumps(as_json_dict(sample_report())))
    assert data["users"] == 40
    assert data["classes"]["degrading"] == 10
    assert data["latest_reliable_week"]["week_number"] == 4
    assert data["latest_reliable_week"]["p25_pct_of_baseline"] == 0.65
    trend = data["cohort_trend"]
    assert trend["late_weeks"] == [3, 4]
    assert trend["early"]["median"] == pytest.approx(1.0)
    assert trend["mean_and_median_disagree"] is True
    assert len(data["weeks"]) == 6
    assert data["weeks"][5]["is_reliable"] is False
    assert data["data_quality"]["daily_activity"]["superseded_rows"] == 24
    assert data["data_quality"]["daily_activity"]["partial_days"] == 21
    assert data["data_quality"]["sleep"]["duplicate_rows"] == 3
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


def test_plot_hatches_the_weeks_seen_by_too_few_users() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from watcher.report_plot import build_figure

    figure = build_figure(sample_report())
    try:
        hatched = [
            (axes_index, patch.get_x())
            for axes_index, axes in enumerate(figure.axes)
            for patch in axes.patches
            if patch.get_hatch() == "//"
        ]
        labels = [t.get_text() for t in figure.axes[1].get_legend().get_texts()]
    finally:
        plt.close(figure)
    assert sorted(hatched) == [(0, 4.5), (1, 4.5)]  # week 5 (4 users), in both panels
    assert "too few users (< 10)" in labels
