-- How far a running job has come (src/model/progress.rs), as its worker last reported.
ALTER TABLE dss_jobs ADD COLUMN IF NOT EXISTS progress JSONB;
