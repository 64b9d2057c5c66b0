-- Guest log events for the debug stream (`/api/ext-debug/stream`): every
-- control-plane replica appends what workers publish here and reads its
-- watchers' events from here, so a watcher sees the whole fleet's events and
-- resumes by id on any replica. Unlogged: debug events are not worth a WAL
-- write, and a database crash may empty the table. Only the newest events of
-- each (tenant, extension) are kept (the control plane trims the rest).
CREATE UNLOGGED TABLE IF NOT EXISTS ext_debug_events (
    id           bigserial PRIMARY KEY,
    tenant_id    varchar NOT NULL,
    -- Registry id.
    extension_id varchar NOT NULL,
    install_id   varchar NOT NULL DEFAULT '',
    request_id   varchar NOT NULL DEFAULT '',
    version_id   varchar NOT NULL DEFAULT '',
    content_hash varchar NOT NULL DEFAULT '',
    ts_ms        bigint NOT NULL,
    -- trace | debug | info | warn | error
    level        varchar(8) NOT NULL,
    -- log | stderr | stdout | system
    stream       varchar(8) NOT NULL,
    message      text NOT NULL,
    truncated    boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS ext_debug_events_key_idx
    ON ext_debug_events (tenant_id, extension_id, id);
