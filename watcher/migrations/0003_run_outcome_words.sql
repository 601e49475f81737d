-- One vocabulary for a file's fate, in ops.pipeline_runs as in the manifest, the logs, the
-- metrics and the summaries: loaded, duplicate, ignored, rejected, failed, pending, and
-- unchanged (an already loaded file found again with the same content: nothing to do).
--
-- Before this migration files_skipped lumped unchanged, duplicate, ignored and busy files
-- together, and files_failed counted the rejected files too. Now each word has its column:
-- files_skipped becomes files_unchanged, files_failed counts the failed files only. Rows of
-- earlier runs keep their old counts (the new columns are 0 for them).
ALTER TABLE ops.pipeline_runs RENAME COLUMN files_skipped TO files_unchanged;
ALTER TABLE ops.pipeline_runs
    ADD COLUMN files_duplicate integer NOT NULL DEFAULT 0,
    ADD COLUMN files_ignored   integer NOT NULL DEFAULT 0,
    ADD COLUMN files_rejected  integer NOT NULL DEFAULT 0,
    ADD COLUMN files_pending   integer NOT NULL DEFAULT 0;

COMMENT ON COLUMN ops.pipeline_runs.files_loaded IS 'files loaded by this pass';
COMMENT ON COLUMN ops.pipeline_runs.files_duplicate IS 'files whose content was already loaded from another path';
COMMENT ON COLUMN ops.pipeline_runs.files_ignored IS 'entries no route takes or that cannot be read as a file';
COMMENT ON COLUMN ops.pipeline_runs.files_rejected IS 'files refused for their content (reason in the manifest)';
COMMENT ON COLUMN ops.pipeline_runs.files_failed IS 'files whose load failed (counted the rejected ones too before migration 0003)';
COMMENT ON COLUMN ops.pipeline_runs.files_pending IS 'files left for a later pass (another process was loading them)';
COMMENT ON COLUMN ops.pipeline_runs.files_unchanged IS 'already loaded files found again with the same content (before migration 0003: also duplicate, ignored, pending)';
