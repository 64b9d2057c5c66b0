-- Capture and replay (docs/design/replay.md). One capture policy per
-- install: the share of calls recorded and whether failed ones are kept.
CREATE TABLE IF NOT EXISTS capture_policies (
    tenant_id       varchar NOT NULL,
    install_id      uuid NOT NULL,
    -- Parts per million of calls recorded.
    sample_ppm      integer NOT NULL CHECK (sample_ppm BETWEEN 0 AND 1000000),
    failures        boolean NOT NULL,
    retention_hours integer NOT NULL CHECK (retention_hours > 0),
    max_bytes       bigint NOT NULL CHECK (max_bytes > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, install_id)
);

-- Captured executions. The tape is the worker's JSON; the secrets the
-- guest's answers held are sealed (AES-256-GCM under the KEK, bound to the
-- capture id), never stored in clear.
CREATE TABLE IF NOT EXISTS captures (
    id             uuid PRIMARY KEY,
    tenant_id      varchar NOT NULL,
    install_id     uuid NOT NULL,
    request_id     varchar NOT NULL DEFAULT '',
    content_hash   varchar NOT NULL,
    -- sampled | failure
    reason         varchar(16) NOT NULL,
    -- ok | trap | timeout | oom | rejected
    outcome        varchar(16) NOT NULL,
    status         integer NOT NULL,
    method         varchar NOT NULL DEFAULT '',
    path           text NOT NULL DEFAULT '',
    size_bytes     bigint NOT NULL,
    secret_keys    text[] NOT NULL DEFAULT '{}',
    sealed_secrets text NOT NULL DEFAULT '',
    tape           bytea NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS captures_tenant_install_idx
    ON captures (tenant_id, install_id, created_at DESC);
CREATE INDEX IF NOT EXISTS captures_expiry_idx ON captures (expires_at);

-- Who read a capture, and who had its secrets revealed.
CREATE TABLE IF NOT EXISTS capture_access (
    id         bigserial PRIMARY KEY,
    tenant_id  varchar NOT NULL,
    capture_id uuid NOT NULL,
    -- read | reveal
    action     varchar(16) NOT NULL,
    actor      varchar NOT NULL,
    at         timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS capture_access_capture_idx ON capture_access (tenant_id, capture_id, id);
