-- The event journal's index (src/jobs/queue/journal.rs): one row per event of each
-- replica (journal NULL: deleted), and the journals no row names any more, deleted from
-- the bucket after their grace time. Text in byte order ("C"): timestamps and ids sort
-- as the journal orders them.
CREATE TABLE IF NOT EXISTS dss_events (
    replica TEXT NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL,
    ts TEXT COLLATE "C" NOT NULL,
    journal TEXT COLLATE "C",
    off BIGINT NOT NULL,
    size BIGINT NOT NULL,
    jsize BIGINT NOT NULL,
    pending BOOLEAN NOT NULL,
    PRIMARY KEY (replica, event_id)
);
CREATE INDEX IF NOT EXISTS dss_events_order ON dss_events (replica, ts, event_id) WHERE journal IS NOT NULL;
CREATE INDEX IF NOT EXISTS dss_events_journal ON dss_events (replica, journal);
CREATE INDEX IF NOT EXISTS dss_events_pending ON dss_events (replica, ts, event_id) WHERE pending;
CREATE TABLE IF NOT EXISTS dss_event_garbage (
    replica TEXT NOT NULL,
    journal TEXT NOT NULL,
    after BIGINT NOT NULL,
    PRIMARY KEY (replica, journal)
);
