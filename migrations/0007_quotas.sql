-- Fleet-wide execution quotas (per tenant, or per install), the edges that
-- follow routes (so each replica can split a quota across the whole fleet),
-- and finer usage columns for extension_quota_usage.

-- install_id NULL: the tenant's quota over all of its installs. 0 = unlimited.
CREATE TABLE IF NOT EXISTS tenant_quotas (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           varchar NOT NULL,
    install_id          uuid REFERENCES tenant_extension_install (id) ON DELETE CASCADE,
    max_concurrency     integer NOT NULL DEFAULT 0 CHECK (max_concurrency >= 0),
    requests_per_second integer NOT NULL DEFAULT 0 CHECK (requests_per_second >= 0),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS tenant_quotas_tenant_idx
    ON tenant_quotas (tenant_id) WHERE install_id IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS tenant_quotas_install_idx
    ON tenant_quotas (tenant_id, install_id) WHERE install_id IS NOT NULL;

-- Edges following Dispatch.WatchRoutes, refreshed by the replica that serves
-- each stream; rows older than a few seconds are edges that went away.
CREATE TABLE IF NOT EXISTS route_watchers (
    edge_id    text PRIMARY KEY,
    replica_id text NOT NULL,
    last_seen  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS route_watchers_last_seen_idx ON route_watchers (last_seen);

-- Exact figures as workers report them; cpu_ms and mem_mb_ms (Alga's
-- columns) are kept equal to them, rounded down.
ALTER TABLE extension_quota_usage
    ADD COLUMN IF NOT EXISTS cpu_us         bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS memory_byte_ms bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS fuel           bigint NOT NULL DEFAULT 0;
