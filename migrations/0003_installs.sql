-- Tenant installs with their config, sealed secrets and schedules
-- (docs/design/alga-compatibility.md, "Data model", "Secrets", "Host APIs").

CREATE TABLE IF NOT EXISTS tenant_extension_install (
    id               uuid PRIMARY KEY,
    tenant_id        varchar NOT NULL,
    registry_id      uuid NOT NULL REFERENCES extension_registry (id) ON DELETE CASCADE,
    version_id       uuid NOT NULL REFERENCES extension_version (id),
    granted_caps     jsonb NOT NULL DEFAULT '[]',
    -- Mirrors tenant_extension_install_config.config (Alga reads the config row first).
    config           jsonb NOT NULL DEFAULT '{}',
    is_enabled       boolean NOT NULL DEFAULT true,
    status           text NOT NULL DEFAULT 'enabled'
                     CHECK (status IN ('enabled', 'disabled', 'pending')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    runner_domain    text UNIQUE NULL,
    runner_status    jsonb NOT NULL DEFAULT '{"state":"pending"}',
    runner_ref       jsonb NULL,
    -- Annex: hosts this install may reach (bounded by the platform allowlist).
    egress_allowlist jsonb NOT NULL DEFAULT '[]',
    UNIQUE (tenant_id, registry_id)
);
CREATE INDEX IF NOT EXISTS tenant_extension_install_tenant_idx
    ON tenant_extension_install (tenant_id);
CREATE INDEX IF NOT EXISTS tenant_extension_install_tenant_registry_idx
    ON tenant_extension_install (tenant_id, registry_id);
CREATE INDEX IF NOT EXISTS tenant_extension_install_runner_domain_idx
    ON tenant_extension_install (runner_domain);

CREATE TABLE IF NOT EXISTS tenant_extension_install_config (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    install_id uuid NOT NULL UNIQUE REFERENCES tenant_extension_install (id) ON DELETE CASCADE,
    tenant_id  varchar NOT NULL,
    config     jsonb NOT NULL DEFAULT '{}',
    providers  jsonb NOT NULL DEFAULT '[]',
    -- A new UUID on every change, so caches can tell a stale config.
    version    varchar NOT NULL DEFAULT gen_random_uuid()::text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tenant_extension_install_secrets (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    install_id    uuid NOT NULL UNIQUE REFERENCES tenant_extension_install (id) ON DELETE CASCADE,
    tenant_id     varchar NOT NULL,
    ciphertext    text NOT NULL,
    algorithm     varchar NOT NULL DEFAULT 'inline/base64',
    transit_key   varchar,
    transit_mount varchar,
    version       varchar,
    expires_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tenant_extension_schedule (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Annex deviates from Alga here: schedules go with their install.
    install_id         uuid NOT NULL REFERENCES tenant_extension_install (id) ON DELETE CASCADE,
    tenant_id          varchar NOT NULL,
    endpoint_id        uuid NOT NULL,
    name               varchar(128) NULL,
    cron               text NOT NULL,
    timezone           varchar(64) NOT NULL DEFAULT 'UTC',
    enabled            boolean NOT NULL DEFAULT true,
    payload_json       jsonb,
    job_id             uuid,
    runner_schedule_id varchar(255),
    -- Annex: when the scheduler fires next (computed from cron and timezone).
    next_run_at        timestamptz,
    last_run_at        timestamptz,
    last_run_status    varchar(32),
    last_error         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS tenant_extension_schedule_install_name_key
    ON tenant_extension_schedule (install_id, name) WHERE name IS NOT NULL;
CREATE INDEX IF NOT EXISTS tenant_extension_schedule_tenant_idx
    ON tenant_extension_schedule (tenant_id);
CREATE INDEX IF NOT EXISTS tenant_extension_schedule_tenant_install_idx
    ON tenant_extension_schedule (tenant_id, install_id);
CREATE INDEX IF NOT EXISTS tenant_extension_schedule_tenant_endpoint_idx
    ON tenant_extension_schedule (tenant_id, endpoint_id);
CREATE INDEX IF NOT EXISTS tenant_extension_schedule_runner_schedule_idx
    ON tenant_extension_schedule (runner_schedule_id);
CREATE INDEX IF NOT EXISTS tenant_extension_schedule_tenant_job_idx
    ON tenant_extension_schedule (tenant_id, job_id);
CREATE INDEX IF NOT EXISTS tenant_extension_schedule_due_idx
    ON tenant_extension_schedule (next_run_at) WHERE enabled;
