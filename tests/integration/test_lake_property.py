"""What the lake holds is what the raw tables hold, whatever the order of writes, overwrites,
renames, copies and deletes: a stateful property test.

A hypothesis state machine drives a lake (a temporary folder) with a few small daily-activity
contents (so that copies and duplicates happen; their rows overlap, each is a prefix of the next)
and one content that is rejected (a header and no rows). After each pass, the raw rows of the
database under test, as a multiset per content (the data columns, not lineage), must equal those
of a fresh database loading the same lake, plus the rows kept as documented: a path counts with
the last loadable content it had when a pass saw it, so the rows of a file removed from the lake,
or of the earlier version of a file whose new version is rejected, stay.

Speed: two databases for the whole module, emptied between examples; the pass is
``Pipeline.run_pass(pending(scan(lake)), "once")`` in-process, without dbt; the fresh database
loads each state of the lake once (states recur across examples). 60 examples of up to 15 steps
found the lost rows of a copy's original being overwritten, on the code before the fix, in 6 runs
out of 6 (first at example 10 to 46); ``LAKE_PROPERTY_EXAMPLES`` sets another number.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test
from prometheus_client import CollectorRegistry
from psycopg import sql

from tests.conftest import scratch_database
from tests.dbtkit import DAILY_ACTIVITY_COLUMNS
from tests.helpers import DAILY_HEADER, daily_rows, once_json, settings_for_tests
from watcher.database import migrate
from watcher.landing.scanner import scan
from watcher.metrics import Metrics
from watcher.pipeline import Pipeline

# Contents 0-2 are loadable, of three sizes (a same-size rewrite within the clock's tick could look
# unchanged); content 3 is rejected. Their rows overlap: rows are compared per content.
CONTENTS: tuple[bytes, ...] = (
    *(
        ("\r\n".join([DAILY_HEADER, *daily_rows(1, days, first_id=100)]) + "\r\n").encode()
        for days in (1, 2, 4)
    ),
    (DAILY_HEADER + "\r\n").encode(),
)
REJECTED = 3
PATHS = ("dailyActivity_merged.csv", "archive/dailyActivity_merged.csv", "archive/2016/dailyActivity_c.csv")
DATA_COLUMNS = sql.SQL(", ").join(sql.Identifier("r", c) for c in DAILY_ACTIVITY_COLUMNS)
RESET = (
    "TRUNCATE raw.daily_activity, raw.sleep, ops.rejected_rows, ops.raw_ingest_manifest,"
    " ops.file_loads, ops.pipeline_runs"
)
RowsByContent = Counter[tuple[str, tuple[Any, ...]]]


def raw_rows(conn: psycopg.Connection[Any]) -> RowsByContent:
    """Every raw row as (sha256 of the content it was loaded from, data columns), with its count."""
    query = sql.SQL(
        "SELECT l.source_sha256, {} FROM raw.daily_activity AS r JOIN ops.file_loads AS l"
        " ON l.load_id = r._load_id"
    ).format(DATA_COLUMNS)
    rows = conn.execute(query).fetchall()
    conn.rollback()
    return Counter((str(r[0]), tuple(r[1:])) for r in rows)


@pytest.fixture(scope="module")
def two_databases(pg_admin_url: str) -> Iterator[tuple[str, str]]:
    with (
        scratch_database(pg_admin_url, prefix="wp_prop") as first,
        scratch_database(pg_admin_url, prefix="wp_prop") as second,
    ):
        for url in (first, second):
            migrate(url)
        yield first, second


class LakeMachine(RuleBasedStateMachine):
    urls: ClassVar[tuple[str, str]] = ("", "")
    fresh_rows: ClassVar[dict[tuple[tuple[str, int], ...], RowsByContent]] = {}
    rows_of: ClassVar[dict[str, RowsByContent]] = {}  # rows of each content, from the fresh loads

    def __init__(self) -> None:
        super().__init__()
        self.lake = Path(tempfile.mkdtemp(prefix="lake-"))
        self.files: dict[str, int] = {}  # what the lake holds now: path -> content
        self.seen: dict[str, int] = {}  # the last loadable content a pass saw at each path
        self.pipelines = []
        self.connections = []
        for url in self.urls:
            conn = psycopg.connect(url)
            conn.execute(RESET)
            conn.commit()
            self.connections.append(conn)
            settings_ = settings_for_tests(self.lake, url)
            self.pipelines.append(Pipeline(settings_, url, Metrics(CollectorRegistry())))

    def teardown(self) -> None:
        for pipeline in self.pipelines:
            pipeline.close()
        for conn in self.connections:
            conn.close()
        shutil.rmtree(self.lake, ignore_errors=True)

    # -- what a user does to the lake ---------------------------------------------------------------

    def _write(self, relative: str, content: int) -> None:
        path = self.lake / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(CONTENTS[content])
        self.files[relative] = content

    # Each change may be followed by a pass at once (then_pass), so that passes come often
    # enough between changes for the orders that matter to be found in a few dozen examples.

    @rule(path=st.sampled_from(PATHS), content=st.integers(0, len(CONTENTS) - 1), then_pass=st.booleans())
    def write(self, path: str, content: int, then_pass: bool) -> None:
        """A new file, or an overwrite in place."""
        self._write(path, content)
        self._maybe_pass(then_pass)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), target_path=st.sampled_from(PATHS), then_pass=st.booleans())
    def rename(self, data: st.DataObject, target_path: str, then_pass: bool) -> None:
        """A move, into a subfolder or out of it, maybe over another file."""
        source = data.draw(st.sampled_from(sorted(self.files)))
        if source != target_path:
            (self.lake / target_path).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.lake / source, self.lake / target_path)
            self.files[target_path] = self.files.pop(source)
        self._maybe_pass(then_pass)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), target_path=st.sampled_from(PATHS), then_pass=st.booleans())
    def copy(self, data: st.DataObject, target_path: str, then_pass: bool) -> None:
        source = data.draw(st.sampled_from(sorted(self.files)))
        if source != target_path:
            self._write(target_path, self.files[source])
        self._maybe_pass(then_pass)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), then_pass=st.booleans())
    def delete(self, data: st.DataObject, then_pass: bool) -> None:
        source = data.draw(st.sampled_from(sorted(self.files)))
        (self.lake / source).unlink()
        del self.files[source]
        self._maybe_pass(then_pass)

    def _maybe_pass(self, then_pass: bool) -> None:
        if then_pass:
            self.one_pass()

    # -- a pass, and the property -------------------------------------------------------------------

    @rule()
    def one_pass(self) -> None:
        under_test, fresh = self.pipelines
        result = under_test.run_pass(under_test.pending(scan(self.lake)), "once")
        assert result.infrastructure_error is None, result.infrastructure_error
        for path, content in self.files.items():
            if content != REJECTED:
                self.seen[path] = content

        expected = self._fresh_load(fresh)
        # kept: the last loadable content of a path removed since, or whose version is rejected now
        counted = {_sha(content) for content in self.seen.values()}
        in_lake = {sha for sha, _ in expected}
        assert in_lake <= counted
        for sha in counted - in_lake:
            expected += self.rows_of[sha]
        assert raw_rows(self.connections[0]) == expected, self._explain()

    def _fresh_load(self, fresh: Pipeline) -> RowsByContent:
        """The rows of a fresh database loading the lake as it is (remembered per lake state)."""
        state = tuple(sorted(self.files.items()))
        if state not in self.fresh_rows:
            self.connections[1].execute(RESET)
            self.connections[1].commit()
            fresh.run_pass(fresh.pending(scan(self.lake)), "once")
            self.fresh_rows[state] = raw_rows(self.connections[1])
        expected = Counter(self.fresh_rows[state])
        for sha, row in expected:
            self.rows_of.setdefault(sha, Counter())[(sha, row)] = expected[(sha, row)]
        return expected

    def _explain(self) -> str:
        entries = (
            self.connections[0]
            .execute(
                "SELECT source_path, status, left(source_sha256, 8), duplicate_of, load_id"
                " FROM ops.raw_ingest_manifest ORDER BY 1"
            )
            .fetchall()
        )
        self.connections[0].rollback()
        return f"lake={self.files} seen={self.seen} manifest={entries}"


def _sha(content: int) -> str:
    return hashlib.sha256(CONTENTS[content]).hexdigest()


@pytest.mark.slow
def test_the_raw_tables_hold_what_the_lake_holds(two_databases: tuple[str, str]) -> None:
    LakeMachine.urls = two_databases
    run_state_machine_as_test(
        LakeMachine,
        settings=settings(
            max_examples=int(os.environ.get("LAKE_PROPERTY_EXAMPLES", "60")),
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.mark.slow
def test_the_monthly_workflow_through_the_cli(tmp_path: Path, migrated_url: str, pg_admin_url: str) -> None:
    """One example of the property through the real CLI: load, archive, overwrite, compare with a
    fresh database loading the same lake."""
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / PATHS[0]).write_bytes(CONTENTS[2])
    assert once_json(lake, migrated_url, "--no-dbt")[0] == 0
    (lake / PATHS[2]).parent.mkdir(parents=True)
    os.replace(lake / PATHS[0], lake / PATHS[1])
    assert once_json(lake, migrated_url, "--no-dbt")[1]["counts"] == {"duplicate": 1}
    (lake / PATHS[0]).write_bytes(CONTENTS[1])
    (lake / PATHS[2]).write_bytes(CONTENTS[2])  # another copy of the archived content
    code, payload = once_json(lake, migrated_url, "--no-dbt")
    assert code == 0 and payload["counts"] == {"loaded": 1, "duplicate": 1}, payload

    with scratch_database(pg_admin_url, prefix="wp_fresh") as fresh:
        assert once_json(lake, fresh, "--no-dbt")[0] == 0
        with psycopg.connect(migrated_url) as tested, psycopg.connect(fresh) as reference:
            assert raw_rows(tested) == raw_rows(reference)
            assert set(raw_rows(tested)) and {sha for sha, _ in raw_rows(tested)} == {
                _sha(1),
                _sha(2),
            }
