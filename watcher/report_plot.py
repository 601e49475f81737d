"""The report's picture: the cohort's weekly percent of baseline, and the users in each class.

matplotlib is an optional extra (``pip install 'wearable-data-pipeline[plot]'``); it is imported
only here, only when a plot is asked for.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from watcher.report import Report

CLASS_COLORS = {
    "consistent": "#2e7d32",
    "degrading": "#c62828",
    "improving": "#1565c0",
    "insufficient_data": "#9e9e9e",
}


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise PlotUnavailable(
            "--plot needs matplotlib; install the extra: pip install 'wearable-data-pipeline[plot]'"
        )


def draw(report: Report, path: Path) -> None:
    """Two panels: mean percent of baseline per week (with users observed), shares per class."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    try:
        _draw_baseline(top, report)
        _draw_classes(bottom, report)
        bottom.set_xlabel("weeks since first active day")
        figure.suptitle("Are users keeping up their activity?")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    finally:
        plt.close(figure)


def _draw_baseline(axes: Any, report: Report) -> None:
    weeks = [w for w in report.weeks if w.mean_pct_of_baseline is not None]
    numbers = [w.week_number for w in weeks]
    axes.bar(numbers, [w.users_observed for w in weeks], color="#e0e0e0", label="users observed")
    axes.set_ylabel("users observed")
    line_axes = axes.twinx()
    line_axes.plot(
        numbers,
        [100 * (w.mean_pct_of_baseline or 0.0) for w in weeks],
        marker="o",
        color="#37474f",
        label="mean % of baseline",
    )
    line_axes.axhline(100, color="#90a4ae", linestyle="--", linewidth=1)
    line_axes.set_ylabel("mean % of baseline")
    line_axes.yaxis.set_label_position("left")
    line_axes.yaxis.tick_left()
    axes.yaxis.set_label_position("right")
    axes.yaxis.tick_right()
    axes.set_title("Cohort: mean steps per observed day, % of each user's baseline")


def _draw_classes(axes: Any, report: Report) -> None:
    numbers = [w.week_number for w in report.weeks]
    shares = {
        "consistent": [w.share_consistent for w in report.weeks],
        "degrading": [w.share_degrading for w in report.weeks],
        "improving": [w.share_improving for w in report.weeks],
        "insufficient_data": [w.share_insufficient_data for w in report.weeks],
    }
    axes.stackplot(
        numbers,
        *[[100 * s for s in values] for values in shares.values()],
        labels=[f"{name} ({report.class_counts[name]})" for name in shares],
        colors=[CLASS_COLORS[name] for name in shares],
        alpha=0.85,
    )
    axes.set_ylim(0, 100)
    axes.set_ylabel("% of users observed")
    axes.set_title("Users in each trend class (among those observed that week)")
    axes.legend(loc="lower left", fontsize="small")
