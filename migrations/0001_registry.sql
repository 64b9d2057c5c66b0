-- Registry: extensions, immutable versions, their bundles and declared endpoints
-- (Alga's column names and constraints: docs/design/alga-compatibility.md,
-- "Data model"), plus Annex's bundle bytes.

CREATE TABLE IF NOT EXISTS extension_registry (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    publisher    varchar NOT NULL,
    name         varchar NOT NULL,
    display_name varchar,
    description  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (publisher, name)
);
CREATE INDEX IF NOT EXISTS extension_registry_publisher_name_idx
    ON extension_registry (publisher, name);
-- Selectors name an extension by `lower(publisher || '.' || name)`.
CREATE INDEX IF NOT EXISTS extension_registry_slug_idx
    ON extension_registry (lower(publisher || '.' || name));

CREATE TABLE IF NOT EXISTS extension_version (
    -- No default: the application supplies the id (as Alga does).
    id                 uuid PRIMARY KEY,
    registry_id        uuid NOT NULL REFERENCES extension_registry (id) ON DELETE CASCADE,
    version            varchar NOT NULL,
    -- Annex: the manifest's version as written and signed (`1.2.*` for a
    -- wildcard publish); NULL in rows Alga wrote, where it equals `version`.
    manifest_version   varchar,
    runtime            varchar NOT NULL,
    main_entry         varchar NOT NULL,
    api                jsonb NOT NULL DEFAULT '{}',
    api_endpoints      jsonb NOT NULL DEFAULT '[]',
    ui                 jsonb NULL,
    capabilities       jsonb NOT NULL DEFAULT '[]',
    created_at         timestamptz NOT NULL DEFAULT now(),
    -- Annex: a deprecated version stays installable by existing installs only.
    deprecated         boolean NOT NULL DEFAULT false,
    deprecation_reason text,
    -- Versions are immutable: a second publish of one version is rejected.
    UNIQUE (registry_id, version)
);

CREATE TABLE IF NOT EXISTS extension_bundle (
    id             uuid PRIMARY KEY,
    version_id     uuid NOT NULL REFERENCES extension_version (id) ON DELETE CASCADE,
    -- `sha256:<lowercase hex>` of the bundle.tar.zst bytes.
    content_hash   varchar NOT NULL,
    signature      text,
    -- Annex: the publisher key that made `signature` (publisher_keys.key_id).
    signing_key_id text,
    precompiled    jsonb,
    storage_url    text,
    size_bytes     bigint,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (version_id, content_hash)
);
CREATE INDEX IF NOT EXISTS extension_bundle_content_hash_idx
    ON extension_bundle (content_hash);

CREATE TABLE IF NOT EXISTS extension_api_endpoint (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- No foreign key, as in Alga: rows are reference data materialised per version.
    version_id uuid NOT NULL,
    method     varchar(16) NOT NULL,
    path       text NOT NULL,
    handler    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (version_id, method, path)
);
CREATE INDEX IF NOT EXISTS extension_api_endpoint_version_idx
    ON extension_api_endpoint (version_id);

-- Annex: bundle bytes by content hash (the Postgres blob backend). Not a foreign
-- key target of extension_bundle, because bytes may live in another blob store.
CREATE TABLE IF NOT EXISTS bundle_blobs (
    content_hash varchar PRIMARY KEY,
    bytes        bytea NOT NULL,
    size         bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
