-- Subscriptions (src/model/subscription.rs) and their delivery logs, shared by every
-- backend of the queue. The generation of a replica's subscriptions changes with each put
-- and delete, so that matching reloads them only then. Documents are text, not jsonb:
-- their key order is what the owner sent (and what goes out), and jsonb would reorder it.
CREATE TABLE IF NOT EXISTS dss_subscriptions (
    replica TEXT NOT NULL,
    uuid TEXT NOT NULL,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    doc TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (replica, uuid)
);
CREATE INDEX IF NOT EXISTS dss_subscriptions_owner ON dss_subscriptions (replica, owner, kind);
CREATE TABLE IF NOT EXISTS dss_subscription_generations (
    replica TEXT PRIMARY KEY,
    n BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS dss_deliveries (
    id BIGSERIAL PRIMARY KEY,
    replica TEXT NOT NULL,
    subscription TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dss_deliveries_subscription ON dss_deliveries (replica, subscription, id);
