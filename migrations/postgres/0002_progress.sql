-- How far a running job has come (src/model/progress.rs), as its worker last reported.
-- A table of its own: most jobs never report, and a column on dss_jobs made every queue
-- operation about three times slower in scripts/bench-jobs.
CREATE TABLE IF NOT EXISTS dss_job_progress (
    id BIGINT PRIMARY KEY,
    progress JSONB NOT NULL
);
