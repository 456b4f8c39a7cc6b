-- Who made each collection uuid first (src/jobs/queue/registry.rs): claimed atomically
-- before its first document is written, so two users making the same new uuid at once
-- (on one backend or several, in one replica or two) cannot both have it.
CREATE TABLE IF NOT EXISTS dss_collection_claims (
    uuid TEXT PRIMARY KEY,
    owner TEXT NOT NULL
);
