-- A pass cut short by a stop request (SIGTERM, SIGINT) is recorded as 'interrupted': files it did
-- not get to stay pending, and a build it cut off runs again at the next start. Before, such a
-- pass was closed as 'success' with the files it had loaded, often none.
ALTER TABLE ops.pipeline_runs DROP CONSTRAINT IF EXISTS pipeline_runs_status_check;
ALTER TABLE ops.pipeline_runs ADD CONSTRAINT pipeline_runs_status_check
    CHECK (status IN ('running', 'success', 'partial', 'failed', 'interrupted'));
