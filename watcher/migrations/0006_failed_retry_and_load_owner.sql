-- A failed file is tried again when it changes, on `reprocess`, or after a back-off that doubles
-- with each failure: the manifest keeps the file's mode beside its size and modification time
-- (a `chmod` that makes it readable is a change) and how many times in a row it failed.
ALTER TABLE ops.raw_ingest_manifest
    ADD COLUMN file_mode       integer,
    ADD COLUMN failed_attempts integer NOT NULL DEFAULT 0;

-- Which path holds a load's rows, and which paths duplicate it: looked up when a path's content
-- changes (a duplicate of the old content takes the load over) and when a content arrives whose
-- rows a rejected or failed path still keeps from an earlier version.
CREATE INDEX raw_ingest_manifest_load_idx ON ops.raw_ingest_manifest (load_id);
CREATE INDEX raw_ingest_manifest_duplicate_of_idx ON ops.raw_ingest_manifest (duplicate_of);
