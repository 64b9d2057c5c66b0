//! [`PgStore`]: the [`Store`](super::Store) on Postgres (deadpool-postgres over tokio-postgres),
//! the system of record. All of Annex's SQL text lives here and in `migrations/`.
//!
//! Invariants kept here rather than by callers:
//! - a publish is one transaction holding the registry row's lock, so versions
//!   of one extension are written one at a time (exact duplicates lose with
//!   `VersionExists`, wildcards resolve to distinct patches);
//! - the install row's `config` and the `tenant_extension_install_config` row are
//!   written in the same transaction, and every config change gets a new version;
//! - orderings use `COLLATE "C"` so they match [`super::MemoryStore`] whatever the
//!   database's default collation is.
//!
//! Layout: this file owns the pool, migrations, error mapping and the health
//! check; each area's file (`registry`, `blobs`, `trust`, `installs`, `kv`,
//! `schedules`, `fleet`, `quota`, `apikeys`, `executions`, `idempotency`, named as in
//! `store/` and `memory/`) implements that area's trait with its SQL; `rows`
//! decodes the rows several areas share and `cached` prepares hot statements
//! once per pooled connection.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::{HealthStore, StoreError, StoreResult};
use rows::col;

/// How to reach Postgres.
#[derive(Clone)]
pub struct PgStoreConfig {
    /// `postgres://user[:password]@host:port/database`; never logged.
    pub url: String,
    /// Pool size. Each in-flight store call holds one connection.
    pub max_connections: usize,
}

/// Shows the URL without its password.
impl std::fmt::Debug for PgStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStoreConfig")
            .field("url", &redact_password(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// `scheme://user:***@host/...` for a URL with a password; other forms are
/// hidden entirely, since key=value strings may carry `password=` anywhere.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<connection string>".to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// The Postgres store. Cloning shares the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Storage puts waiting for their install's next transaction.
    puts: std::sync::Arc<kv::PutQueues>,
}

/// The migrations in the order they apply; each applies once per database.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_registry",
        include_str!("../../../../migrations/0001_registry.sql"),
    ),
    (
        "0002_trust",
        include_str!("../../../../migrations/0002_trust.sql"),
    ),
    (
        "0003_installs",
        include_str!("../../../../migrations/0003_installs.sql"),
    ),
    (
        "0004_runtime",
        include_str!("../../../../migrations/0004_runtime.sql"),
    ),
    (
        "0005_runtime_ids",
        include_str!("../../../../migrations/0005_runtime_ids.sql"),
    ),
    (
        "0006_schedule_endpoints",
        include_str!("../../../../migrations/0006_schedule_endpoints.sql"),
    ),
    (
        "0007_quotas",
        include_str!("../../../../migrations/0007_quotas.sql"),
    ),
    (
        "0008_idempotency",
        include_str!("../../../../migrations/0008_idempotency.sql"),
    ),
    (
        "0009_debug_events",
        include_str!("../../../../migrations/0009_debug_events.sql"),
    ),
    (
        "0010_bundle_blobs_external",
        include_str!("../../../../migrations/0010_bundle_blobs_external.sql"),
    ),
    (
        "0011_rollouts",
        include_str!("../../../../migrations/0011_rollouts.sql"),
    ),
    (
        "0012_captures",
        include_str!("../../../../migrations/0012_captures.sql"),
    ),
];

/// Advisory lock key held while migrating ("annexmig" in ASCII), so replicas
/// starting together apply each migration once.
const MIGRATION_LOCK: i64 = 0x616e_6e65_786d_6967;

/// How long a call waits for a pooled connection, and for a new one, before
/// answering `Unavailable`: long enough to ride out a burst, short enough that
/// `/ready` reports an unreachable database within a probe period.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

impl PgStore {
    /// Connects, checks the database answers, and applies pending migrations.
    pub async fn connect(config: PgStoreConfig) -> StoreResult<PgStore> {
        let pg_config: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| StoreError::Internal(format!("parse the database url: {e}")))?;
        let manager = Manager::from_config(
            pg_config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Internal(format!("build the connection pool: {e}")))?;
        let store = PgStore {
            pool,
            puts: std::sync::Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // Taken before anything else, so even `CREATE TABLE IF NOT EXISTS` of the
        // bookkeeping table cannot race with another replica.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg_error)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    varchar PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(pg_error)?;
        let applied = tx
            .query("SELECT version FROM schema_migrations", &[])
            .await
            .map_err(pg_error)?;
        let applied = applied
            .iter()
            .map(|r| col::<String>(r, "version"))
            .collect::<StoreResult<HashSet<_>>>()?;
        for (version, sql) in MIGRATIONS {
            if applied.contains(*version) {
                continue;
            }
            tx.batch_execute(sql)
                .await
                .map_err(|e| StoreError::Internal(format!("apply migration {version}: {e}")))?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(pg_error)?;
            tracing::info!(migration = version, "migration applied");
        }
        tx.commit().await.map_err(pg_error)
    }
}

// Column lists and their decoders; its macros are used by the modules below.
#[macro_use]
mod rows;

mod apikeys;
mod blobs;
mod cached;
mod captures;
mod executions;
mod fleet;
mod idempotency;
mod installs;
mod kv;
mod logs;
mod quota;
mod registry;
mod rollouts;
mod schedules;
mod trust;

#[async_trait]
impl HealthStore for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.execute("SELECT 1", &[]).await.map_err(pg_error)?;
        Ok(())
    }
}

// ---- errors ----

fn pg_error(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            return StoreError::AlreadyExists(db.constraint().unwrap_or("row").to_owned());
        }
        if *code == SqlState::FOREIGN_KEY_VIOLATION {
            return StoreError::NotFound(db.constraint().unwrap_or("referenced row").to_owned());
        }
        // Class 22 (data exception): this value can never be stored.
        let class = code.code();
        if class.starts_with("22") {
            return StoreError::InvalidData(format!("{class}: {}", db.message()));
        }
        // Class 08 (connection exception), 53 (insufficient resources), 57P0x (shutting down).
        if class.starts_with("08") || class.starts_with("53") || class.starts_with("57P0") {
            return StoreError::Unavailable(db.message().to_owned());
        }
        return StoreError::Internal(format!("{}: {}", code.code(), db.message()));
    }
    // No server error: the connection broke or could not be made.
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Internal(e.to_string())
    }
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg_error(e),
        PoolError::Timeout(t) => {
            StoreError::Unavailable(format!("no database connection ({t:?} timed out)"))
        }
        PoolError::Closed => StoreError::Unavailable("the connection pool is closed".to_owned()),
        other => StoreError::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_password() {
        let config = PgStoreConfig {
            url: "postgres://annex:s3cret@db:5432/annex?sslmode=disable".into(),
            max_connections: 4,
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://annex:***@db:5432/annex?sslmode=disable"),
            "{shown}"
        );
        assert_eq!(
            redact_password("postgres://annex@db/annex"),
            "postgres://annex@db/annex"
        );
        assert_eq!(redact_password("host=db password=x"), "<connection string>");
    }
}
