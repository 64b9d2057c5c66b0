-- Tables the runtime fills: execution log and quota usage, extension KV storage
-- (docs/design/alga-compatibility.md, "Data model" and "Storage"), and Annex's
-- worker membership, idempotency records and API keys.

CREATE TABLE IF NOT EXISTS extension_execution_log (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   varchar NOT NULL,
    registry_id uuid NOT NULL,
    version_id  uuid NOT NULL,
    -- Annex: the install the call ran under (Alga logs registry and version only).
    install_id  uuid,
    request_id  varchar,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    -- started, then ok | error | timeout | policy_denied | upstream_error.
    status      text NOT NULL,
    -- {method, path, endpoint_template, principal_kind, user_id, http_status?, duration_ms?}:
    -- never bodies, headers or secrets.
    metrics     jsonb,
    error       text
);
CREATE INDEX IF NOT EXISTS extension_execution_log_tenant_registry_started_idx
    ON extension_execution_log (tenant_id, registry_id, started_at);

CREATE TABLE IF NOT EXISTS extension_quota_usage (
    tenant_id    varchar NOT NULL,
    registry_id  uuid NOT NULL,
    window_start timestamptz NOT NULL,
    cpu_ms       bigint NOT NULL DEFAULT 0,
    mem_mb_ms    bigint NOT NULL DEFAULT 0,
    invocations  bigint NOT NULL DEFAULT 0,
    egress_bytes bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, registry_id, window_start)
);

-- KV records scoped to (tenant, install). Annex deletes them with the install:
-- a new install gets a new id, so they would be unreachable otherwise.
CREATE TABLE IF NOT EXISTS ext_storage_records (
    tenant_id            varchar NOT NULL,
    extension_install_id uuid NOT NULL REFERENCES tenant_extension_install (id) ON DELETE CASCADE,
    namespace            varchar(128) NOT NULL,
    key                  varchar(256) NOT NULL,
    revision             bigint NOT NULL DEFAULT 1,
    value                jsonb NOT NULL,
    metadata             jsonb NOT NULL DEFAULT '{}',
    -- JSON-serialised UTF-8 sizes, as the quotas measure them.
    value_size_bytes     integer NOT NULL DEFAULT 0,
    metadata_size_bytes  integer NOT NULL DEFAULT 0,
    schema_version       integer,
    ttl_expires_at       timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, extension_install_id, namespace, key)
);
CREATE INDEX IF NOT EXISTS ext_storage_records_ttl_idx
    ON ext_storage_records (tenant_id, extension_install_id, ttl_expires_at)
    WHERE ttl_expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS ext_storage_schemas (
    tenant_id            varchar NOT NULL,
    extension_install_id uuid NOT NULL REFERENCES tenant_extension_install (id) ON DELETE CASCADE,
    namespace            varchar(128) NOT NULL,
    schema_version       integer NOT NULL,
    schema_document      jsonb NOT NULL,
    status               varchar(16) NOT NULL DEFAULT 'active',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, extension_install_id, namespace, schema_version)
);

CREATE TABLE IF NOT EXISTS ext_storage_usage (
    tenant_id            varchar NOT NULL,
    extension_install_id uuid NOT NULL REFERENCES tenant_extension_install (id) ON DELETE CASCADE,
    bytes_used           bigint NOT NULL DEFAULT 0,
    keys_count           integer NOT NULL DEFAULT 0,
    namespaces_count     integer NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, extension_install_id)
);

-- Worker membership: registered workers and their last heartbeat.
CREATE TABLE IF NOT EXISTS workers (
    id                uuid PRIMARY KEY,
    -- Where edges and the control plane reach the worker's gRPC server.
    address           text NOT NULL,
    -- Engine compatibility hash: workers with equal hashes share compiled artifacts.
    engine_hash       varchar,
    capacity          integer NOT NULL DEFAULT 0,
    in_flight         integer NOT NULL DEFAULT 0,
    draining          boolean NOT NULL DEFAULT false,
    cached_hashes     jsonb NOT NULL DEFAULT '[]',
    labels            jsonb NOT NULL DEFAULT '{}',
    registered_at     timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS workers_last_heartbeat_idx ON workers (last_heartbeat_at);

-- Idempotency keys, scoped to (tenant, install, key) and kept until expires_at.
CREATE TABLE IF NOT EXISTS idempotency_records (
    tenant_id       varchar NOT NULL,
    install_id      uuid NOT NULL,
    idempotency_key varchar(255) NOT NULL,
    -- SHA-256 of method, path and body: a reused key with another request is a conflict.
    request_hash    varchar,
    -- in_progress | completed
    state           varchar(16) NOT NULL DEFAULT 'in_progress',
    response        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, install_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS idempotency_records_expires_idx ON idempotency_records (expires_at);

-- API keys for the HTTP admin API; only a hash of the secret is stored.
CREATE TABLE IF NOT EXISTS api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- `sha256:<hex>` of the full key.
    key_hash     varchar NOT NULL UNIQUE,
    -- The first characters of the key, for display and log lines.
    key_prefix   varchar(16) NOT NULL,
    -- NULL: a platform (operator) key; otherwise scoped to one tenant.
    tenant_id    varchar,
    name         text NOT NULL DEFAULT '',
    scopes       jsonb NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_tenant_idx ON api_keys (tenant_id);
