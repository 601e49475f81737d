"""The report's picture: the cohort's weekly percent of baseline, and the users in each class.

Weeks seen by too few users to speak for the cohort are hatched and their points faded.

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
    """Two panels: median (IQR band) and mean percent of baseline per week, shares per class.

    Weeks seen by too few users (not ``is_reliable``) are faded and hatched in both panels.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    figure = build_figure(report)
    try:
        figure.savefig(path, dpi=110)
    finally:
        plt.close(figure)


def build_figure(report: Report) -> Any:
    """The report's matplotlib figure (the caller closes it)."""
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    _draw_baseline(top, report)
    _draw_classes(bottom, report)
    for axes in (top, bottom):
        _mark_unreliable(axes, report)
    bottom.legend(loc="lower left", fontsize="small")  # with the hatch's entry
    bottom.set_xlabel("weeks since first active day")
    figure.suptitle("Are users keeping up their activity?")
    figure.tight_layout()
    return figure


def _mark_unreliable(axes: Any, report: Report) -> None:
    """Hatch the weeks seen by too few users to speak for the cohort."""
    thin = [w for w in report.weeks if not w.is_reliable]
    for index, week in enumerate(thin):
        axes.axvspan(
            week.week_number - 0.5,
            week.week_number + 0.5,
            facecolor="white",
            edgecolor="#bdbdbd",
            hatch="//",
            alpha=0.6,
            linewidth=0,
            zorder=3,
            label=f"too few users (< {week.reliable_min_users})" if index == 0 else None,
        )


def _draw_baseline(axes: Any, report: Report) -> None:
    weeks = [w for w in report.weeks if w.median_pct_of_baseline is not None]
    numbers = [w.week_number for w in weeks]
    axes.bar(
        numbers,
        [w.users_observed for w in weeks],
        color=["#e0e0e0" if w.is_reliable else "#f5f5f5" for w in weeks],
        label="users observed",
    )
    axes.set_ylabel("users observed")
    line_axes = axes.twinx()
    reliable = [w for w in weeks if w.is_reliable]
    line_axes.fill_between(
        [w.week_number for w in reliable],
        [100 * (w.p25_pct_of_baseline or 0.0) for w in reliable],
        [100 * (w.p75_pct_of_baseline or 0.0) for w in reliable],
        color="#90caf9",
        alpha=0.5,
        label="interquartile range",
    )
    line_axes.plot(
        [w.week_number for w in reliable],
        [100 * (w.median_pct_of_baseline or 0.0) for w in reliable],
        marker="o",
        color="#0d47a1",
        label="median % of baseline",
    )
    line_axes.plot(
        [w.week_number for w in reliable],
        [100 * (w.mean_pct_of_baseline or 0.0) for w in reliable],
        linestyle="--",
        color="#37474f",
        label="mean",
    )
    thin = [w for w in weeks if not w.is_reliable]
    line_axes.plot(
        [w.week_number for w in thin],
        [100 * (w.median_pct_of_baseline or 0.0) for w in thin],
        linestyle="none",
        marker="o",
        color="#0d47a1",
        alpha=0.3,
    )
    line_axes.axhline(100, color="#90a4ae", linestyle=":", linewidth=1)
    line_axes.set_ylabel("% of baseline")
    line_axes.yaxis.set_label_position("left")
    line_axes.yaxis.tick_left()
    line_axes.legend(loc="lower left", fontsize="small")
    axes.yaxis.set_label_position("right")
    axes.yaxis.tick_right()
    axes.set_title("Cohort: steps per observed day, % of each user's baseline (median, IQR, mean)")


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
