-- Schemas, raw landing tables and the operational tables of the pipeline.
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS ops;

-- One row per committed load of one file. Raw rows point here by _load_id. When a file at a
-- known path changes, its earlier rows are deleted and replaces_load_id names the load they had.
CREATE TABLE ops.file_loads (
    load_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id         bigint,
    source_path    text        NOT NULL,
    source_sha256  text        NOT NULL,
    target_table   text        NOT NULL,
    rows_loaded    bigint      NOT NULL DEFAULT 0,
    rows_rejected  bigint      NOT NULL DEFAULT 0,
    replaces_load_id bigint,
    started_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at    timestamptz
);
CREATE INDEX file_loads_sha_idx ON ops.file_loads (source_sha256);

-- The current state of every file the pipeline has seen, keyed by its path in the data lake.
CREATE TABLE ops.raw_ingest_manifest (
    source_path    text PRIMARY KEY,
    source_sha256  text,
    target_table   text,
    status         text NOT NULL CHECK (status IN ('loaded', 'duplicate', 'rejected', 'failed', 'ignored')),
    duplicate_of   text,
    load_id        bigint REFERENCES ops.file_loads (load_id),
    size_bytes     bigint,
    mtime_ns       bigint,
    rows_loaded    bigint NOT NULL DEFAULT 0,
    rows_rejected  bigint NOT NULL DEFAULT 0,
    error_reason   text,
    warnings       text,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    loaded_at      timestamptz
);
CREATE INDEX raw_ingest_manifest_sha_idx ON ops.raw_ingest_manifest (source_sha256);

-- One row per pass of the pipeline (a --once run, or one batch of the daemon).
CREATE TABLE ops.pipeline_runs (
    run_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trigger        text NOT NULL CHECK (trigger IN ('once', 'startup', 'event', 'reconcile', 'reprocess')),
    instance       text,
    started_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at    timestamptz,
    status         text NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'success', 'partial', 'failed')),
    files_loaded   integer NOT NULL DEFAULT 0,
    files_skipped  integer NOT NULL DEFAULT 0,
    files_failed   integer NOT NULL DEFAULT 0,
    rows_loaded    bigint  NOT NULL DEFAULT 0,
    rows_rejected  bigint  NOT NULL DEFAULT 0,
    dbt_status     text,
    error_summary  text
);

-- Lines of a file that could not be parsed, exactly as they were in the file.
CREATE TABLE ops.rejected_rows (
    rejected_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_path    text   NOT NULL,
    source_sha256  text   NOT NULL,
    target_table   text   NOT NULL,
    line_number    bigint NOT NULL,
    raw_line       text   NOT NULL,
    reason         text   NOT NULL,
    run_id         bigint,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejected_rows_path_idx ON ops.rejected_rows (source_path);

-- Raw landing tables. Lineage columns are filled by defaults, so that COPY streams the file
-- unchanged and still stamps every row: the loader sets wearable.source_path and wearable.load_id
-- for its transaction and restarts the table's line sequence at 2 (line 1 is the header).
-- The file's sha256 is known only once the file has been read; rows reach it through _load_id
-- (ops.file_loads), which avoids a second read of the file or an UPDATE of every row.
CREATE SEQUENCE raw.daily_activity_line_seq CACHE 10000;
CREATE SEQUENCE raw.sleep_line_seq CACHE 10000;
CREATE TABLE raw.daily_activity (
    id                          bigint,
    activity_date               date,
    total_steps                 integer,
    total_distance              double precision,
    tracker_distance            double precision,
    logged_activities_distance  double precision,
    very_active_distance        double precision,
    moderately_active_distance  double precision,
    light_active_distance       double precision,
    sedentary_active_distance   double precision,
    very_active_minutes         integer,
    fairly_active_minutes       integer,
    lightly_active_minutes      integer,
    sedentary_minutes           integer,
    calories                    integer,
    _source_path    text        NOT NULL DEFAULT current_setting('wearable.source_path'),
    _line_number    bigint      NOT NULL DEFAULT nextval('raw.daily_activity_line_seq'),
    _load_id        bigint      NOT NULL DEFAULT current_setting('wearable.load_id')::bigint,
    _loaded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX daily_activity_load_brin ON raw.daily_activity USING brin (_load_id);

CREATE TABLE raw.sleep (
    id                    bigint,
    sleep_day             date,
    total_sleep_records   integer,
    total_minutes_asleep  integer,
    total_time_in_bed     integer,
    _source_path    text        NOT NULL DEFAULT current_setting('wearable.source_path'),
    _line_number    bigint      NOT NULL DEFAULT nextval('raw.sleep_line_seq'),
    _load_id        bigint      NOT NULL DEFAULT current_setting('wearable.load_id')::bigint,
    _loaded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sleep_load_brin ON raw.sleep USING brin (_load_id);
