-- Which collection versions each owner has (src/jobs/queue/registry.rs), so that an
-- owner's list needs no scan of a bucket; every version, PATCHed ones included.
CREATE TABLE IF NOT EXISTS dss_collection_owners (
    owner TEXT NOT NULL,
    uuid TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (owner, uuid, version)
);
CREATE INDEX IF NOT EXISTS dss_collection_owners_uuid ON dss_collection_owners (uuid);
