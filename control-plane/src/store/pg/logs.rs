//! The debug event log on Postgres (`ext_debug_events`, an unlogged table:
//! debug events are worth neither a WAL write nor surviving a database
//! crash). A batch is one statement; appends take turns so that ids commit
//! in order; reads walk the (tenant, extension, id) index.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::cached::Cached;
use super::rows::{col, to_i64, to_u64};
use super::{PgStore, pg_error};
use crate::store::{DebugEvent, DebugFilter, DebugLogStore, StoreResult};

/// Advisory lock key of appends ("annexlog" in ASCII).
const APPEND_LOCK: i64 = 0x616e_6e65_786c_6f67;

const COLUMNS: &str = "id, tenant_id, extension_id, install_id, request_id, version_id, \
                       content_hash, ts_ms, level, stream, message, truncated";

fn event(row: &Row) -> StoreResult<(u64, DebugEvent)> {
    Ok((
        to_u64(col(row, "id")?, "debug event id")?,
        DebugEvent {
            tenant_id: col(row, "tenant_id")?,
            extension_id: col(row, "extension_id")?,
            install_id: col(row, "install_id")?,
            request_id: col(row, "request_id")?,
            version_id: col(row, "version_id")?,
            content_hash: col(row, "content_hash")?,
            ts_ms: col(row, "ts_ms")?,
            level: col(row, "level")?,
            stream: col(row, "stream")?,
            message: col(row, "message")?,
            truncated: col(row, "truncated")?,
        },
    ))
}

#[async_trait]
impl DebugLogStore for PgStore {
    async fn append_debug_events(&self, events: Vec<DebugEvent>) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let text = |f: fn(&DebugEvent) -> &str| -> Vec<&str> { events.iter().map(f).collect() };
        let tenants = text(|e| &e.tenant_id);
        let extensions = text(|e| &e.extension_id);
        let installs = text(|e| &e.install_id);
        let requests = text(|e| &e.request_id);
        let versions = text(|e| &e.version_id);
        let hashes = text(|e| &e.content_hash);
        let levels = text(|e| &e.level);
        let streams = text(|e| &e.stream);
        let messages = text(|e| &e.message);
        let ts: Vec<i64> = events.iter().map(|e| e.ts_ms).collect();
        let truncated: Vec<bool> = events.iter().map(|e| e.truncated).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // Appends take turns (a transaction-scoped advisory lock), so ids
        // become visible in ascending order: a reader that has seen id n
        // never later finds a smaller one committed behind it.
        tx.batch_execute(&format!(
            "SET LOCAL synchronous_commit = off; SELECT pg_advisory_xact_lock({APPEND_LOCK})"
        ))
        .await
        .map_err(pg_error)?;
        // `WITH ORDINALITY` keeps the batch's order in the ids it gets.
        tx.execute_c(
            "INSERT INTO ext_debug_events \
             (tenant_id, extension_id, install_id, request_id, version_id, content_hash, \
              ts_ms, level, stream, message, truncated) \
             SELECT t, x, i, r, v, h, ts, l, s, m, tr FROM UNNEST($1::text[], $2::text[], \
             $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[], \
             $9::text[], $10::text[], $11::bool[]) WITH ORDINALITY \
             AS u(t, x, i, r, v, h, ts, l, s, m, tr, n) ORDER BY n",
            &[
                &tenants,
                &extensions,
                &installs,
                &requests,
                &versions,
                &hashes,
                &ts,
                &levels,
                &streams,
                &messages,
                &truncated,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(())
    }

    async fn read_debug_events(
        &self,
        filter: &DebugFilter,
        after: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<(u64, DebugEvent)>> {
        let client = self.client().await?;
        let limit = i64::from(limit);
        let install = filter.install_id.as_deref();
        let request = filter.request_id.as_deref();
        let matching = "tenant_id = $1 AND extension_id = $2 \
                        AND ($3::text IS NULL OR install_id = $3) \
                        AND ($4::text IS NULL OR request_id = $4)";
        let rows = match after {
            Some(after) => {
                let after = to_i64(after, "debug event id")?;
                client
                    .query_c(
                        &format!(
                            "SELECT {COLUMNS} FROM ext_debug_events WHERE {matching} \
                             AND id > $5 ORDER BY id LIMIT $6"
                        ),
                        &[
                            &filter.tenant_id,
                            &filter.extension_id,
                            &install,
                            &request,
                            &after,
                            &limit,
                        ],
                    )
                    .await
            }
            None => {
                client
                    .query_c(
                        &format!(
                            "SELECT * FROM (SELECT {COLUMNS} FROM ext_debug_events \
                             WHERE {matching} ORDER BY id DESC LIMIT $5) newest ORDER BY id"
                        ),
                        &[
                            &filter.tenant_id,
                            &filter.extension_id,
                            &install,
                            &request,
                            &limit,
                        ],
                    )
                    .await
            }
        }
        .map_err(pg_error)?;
        rows.iter().map(event).collect()
    }

    async fn trim_debug_events(
        &self,
        tenant_id: &str,
        extension_id: &str,
        keep: u32,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute_c(
                "DELETE FROM ext_debug_events WHERE tenant_id = $1 AND extension_id = $2 \
                 AND id <= (SELECT id FROM ext_debug_events \
                 WHERE tenant_id = $1 AND extension_id = $2 ORDER BY id DESC OFFSET $3 LIMIT 1)",
                &[&tenant_id, &extension_id, &i64::from(keep)],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }
}
