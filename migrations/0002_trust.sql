-- Annex trust bundle: publisher signing keys and a revision counter that every
-- change to the key set increases, so workers can tell a stale trust bundle.

CREATE TABLE IF NOT EXISTS publisher_keys (
    key_id     varchar PRIMARY KEY,
    publisher  varchar NOT NULL,
    -- Raw 32-byte Ed25519 public key.
    public_key bytea NOT NULL,
    not_before timestamptz NOT NULL,
    not_after  timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS publisher_keys_publisher_idx ON publisher_keys (publisher);

-- Exactly one row (the primary key is the constant `true`).
CREATE TABLE IF NOT EXISTS trust_revision (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    revision   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO trust_revision (singleton, revision) VALUES (true, 0) ON CONFLICT DO NOTHING;
