import psycopg

from watcher.database import load_migrations, migrate


def test_migrations_apply_once_and_create_the_schemas(database_url: str) -> None:
    first = migrate(database_url)
    second = migrate(database_url)
    assert first == [m.name for m in load_migrations()]
    assert second == []
    with psycopg.connect(database_url) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables"
                " WHERE table_schema IN ('raw', 'ops')"
            )
        }
    assert {"raw.daily_activity", "raw.sleep", "ops.raw_ingest_manifest", "ops.pipeline_runs"} <= tables
