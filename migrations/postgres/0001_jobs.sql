-- The job queue (src/jobs/queue/pg.rs). Applied once by sqlx's migrator at connect.
CREATE TABLE IF NOT EXISTS dss_jobs (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    payload JSONB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'completed', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    run_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    worker TEXT,
    lease_until TIMESTAMPTZ,
    error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Leasing looks at queued jobs by time and at running ones by lease end; both partial,
-- so completed history does not slow them.
CREATE INDEX IF NOT EXISTS dss_jobs_queued ON dss_jobs (run_at, id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS dss_jobs_running ON dss_jobs (lease_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS dss_jobs_key ON dss_jobs (key, id);
CREATE INDEX IF NOT EXISTS dss_jobs_kind ON dss_jobs (kind, id);
