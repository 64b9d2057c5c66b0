-- Annex: gradual rollouts of an install to new versions
-- (docs/design/rollouts.md). One row per rollout; at most one active rollout
-- per install. `revision` is bumped by every change, and every change names
-- the revision it read, so two control-plane replicas evaluating the same
-- rollout cannot both apply a step or a rollback.
CREATE TABLE IF NOT EXISTS extension_rollouts (
    id                uuid PRIMARY KEY,
    tenant_id         varchar NOT NULL,
    install_id        uuid NOT NULL REFERENCES tenant_extension_install (id) ON DELETE CASCADE,
    registry_id       uuid NOT NULL,
    stable_version_id uuid NOT NULL,
    -- [{version_id, weight}] of the canaries; weights in buckets of 10000,
    -- the stable version has what is left.
    variants          jsonb NOT NULL,
    -- {steps: [{weights, hold_secs}], max_error_rate, max_p99_ms, min_calls}
    policy            jsonb NOT NULL,
    -- active | promoted | rolled_back | aborted
    state             text NOT NULL,
    step              integer NOT NULL DEFAULT 0,
    step_started_at   timestamptz NOT NULL,
    revision          bigint NOT NULL DEFAULT 1,
    reason            text,
    -- [{at, action, actor, detail}]: the rollout's audit trail.
    history           jsonb NOT NULL DEFAULT '[]',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS extension_rollouts_one_active_idx
    ON extension_rollouts (install_id) WHERE state = 'active';
CREATE INDEX IF NOT EXISTS extension_rollouts_install_created_idx
    ON extension_rollouts (install_id, created_at);
