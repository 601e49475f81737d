"""The event check that replaced the canary: do file events arrive? Judged from scans only."""

from __future__ import annotations

from watcher.landing.observer import EventCheck

GRACE = 10.0


def started(at: float = 1000.0) -> EventCheck:
    check = EventCheck(GRACE)
    check.restart(at)
    return check


def test_a_settled_change_that_no_event_announced_is_missing() -> None:
    check = started()
    assert check.judge([("/lake/a.csv", 1005.0)], set(), now=1060.0) == ["/lake/a.csv"]


def test_an_announced_change_is_not_missing() -> None:
    check = started()
    assert check.judge([("/lake/a.csv", 1005.0)], {"/lake/a.csv"}, now=1060.0) == []


def test_changes_before_the_watch_began_are_not_judged() -> None:
    check = started()
    assert check.judge([("/lake/backlog.csv", 999.0)], set(), now=1060.0) == []


def test_a_change_before_the_previous_scan_is_not_judged_again() -> None:
    """A file that stays pending (say, it failed) is found by every scan: only the first judges it."""
    check = started()
    assert check.judge([("/lake/failed.csv", 1005.0)], {"/lake/failed.csv"}, now=1060.0) == []
    assert check.judge([("/lake/failed.csv", 1005.0)], set(), now=1120.0) == []


def test_a_young_change_is_judged_at_the_next_scan() -> None:
    check = started()
    assert check.judge([("/lake/young.csv", 1055.0)], set(), now=1060.0) == [], "its event may be on its way"
    assert check.judge([], {"/lake/young.csv"}, now=1110.0) == [], "it came"
    assert check.judge([("/lake/lost.csv", 1115.0)], set(), now=1120.0) == []
    assert check.judge([], set(), now=1180.0) == ["/lake/lost.csv"], "it never came"


def test_nothing_is_judged_before_the_first_restart() -> None:
    assert EventCheck(GRACE).judge([("/lake/a.csv", 5.0)], set(), now=100.0) == []
