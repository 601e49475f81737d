-- A failed file is tried again when it changes, on `reprocess`, or after a back-off that doubles
-- with each failure: the manifest keeps the file's mode beside its size and modification time
-- (a `chmod` that makes it readable is a change) and how many times in a row it failed.
ALTER TABLE ops.raw_ingest_manifest
    ADD COLUMN file_mode       integer,
    ADD COLUMN failed_attempts integer NOT NULL DEFAULT 0;

-- Which path holds a load's rows: looked up when a path's content changes (a duplicate takes the
-- load over) and when a content comes back whose rows a rejected or failed path still keeps.
CREATE INDEX raw_ingest_manifest_load_idx ON ops.raw_ingest_manifest (load_id);
