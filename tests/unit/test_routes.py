from watcher.routes import DAILY_ACTIVITY, ROUTES, SLEEP, map_header, normalize_header, route_for


def test_names_route_case_insensitively() -> None:
    assert route_for("dailyActivity_merged.csv") is DAILY_ACTIVITY
    assert route_for("DAILY-ACTIVITY-2016.CSV") is DAILY_ACTIVITY
    assert route_for("sleepDay_merged.csv") is SLEEP
    assert route_for("hourlySteps_merged.csv") is None
    assert route_for("activity.csv") is None, "both keywords are needed"


def test_every_route_has_a_distinct_table() -> None:
    assert len({r.table for r in ROUTES}) == len(ROUTES)


def test_header_matching_ignores_case_spaces_bom_and_order() -> None:
    assert normalize_header("\ufeff Total Steps ") == "totalsteps"
    cells = ["\ufeffactivitydate", " ID ", "TotalSteps", "Calories", "Extra"]
    mapping = map_header(cells, DAILY_ACTIVITY)
    assert mapping.loadable
    assert mapping.copy_columns == ("activity_date", "id", "total_steps", "calories")
    assert mapping.extra_headers == ("Extra",)
    assert mapping.needs_projection
    assert "SedentaryMinutes" in mapping.missing_optional


def test_missing_required_and_duplicate_columns() -> None:
    mapping = map_header(["Id", "TotalSteps"], DAILY_ACTIVITY)
    assert mapping.missing_required == ("ActivityDate",)
    assert not mapping.loadable
    dup = map_header(["Id", "ActivityDate", "TotalSteps", "total_steps"], DAILY_ACTIVITY)
    assert dup.duplicate_headers == ("total_steps",)
    assert not dup.loadable
