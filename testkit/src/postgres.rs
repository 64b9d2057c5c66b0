//! Throwaway Postgres databases for tests: one database per test, on the
//! server `DATABASE_URL` names, else on one private cluster per test binary
//! started with `annex_devpg::LocalPostgres` from the system binaries. With
//! neither, a test that asks for a database fails under `CI=true` and
//! elsewhere gets `None` after one loud notice (its caller decides whether
//! to skip or to fall back to the in-memory store).
//!
//! It must not hold SQL beyond creating and dropping the databases it hands
//! out; everything else goes through the control plane's store.

use std::io::Write as _;

use annex_control_plane::store::{PgStore, PgStoreConfig};
use annex_devpg::{LocalPostgres, LocalPostgresOptions};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// Where test databases are created: decided once per test binary.
enum Server {
    External {
        url: String,
    },
    Local(LocalPostgres),
    /// Neither `DATABASE_URL` nor PostgreSQL binaries.
    Missing,
    /// Binaries found, but the cluster did not start: every test fails with this.
    Broken(String),
}

static SERVER: OnceCell<Server> = OnceCell::const_new();

async fn server() -> &'static Server {
    SERVER
        .get_or_init(|| async {
            if let Some(url) = std::env::var("DATABASE_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
            {
                return Server::External { url };
            }
            if !annex_devpg::binaries_available() {
                return Server::Missing;
            }
            // Not a TempDir: a static is never dropped, so the cluster's own
            // watchdog removes the directory when this process exits.
            let dir =
                std::env::temp_dir().join(format!("annex-test-pg-{}", Uuid::new_v4().simple()));
            match LocalPostgres::start(&dir, LocalPostgresOptions::default()).await {
                Ok(cluster) => Server::Local(cluster),
                Err(e) => Server::Broken(format!(
                    "starting a throwaway PostgreSQL cluster in {}: {e}",
                    dir.display()
                )),
            }
        })
        .await
}

/// Whether `LocalPostgres` can run here; outside CI a missing installation
/// skips the caller (after a notice), under `CI=true` it fails.
pub fn local_binaries_or_skip() -> bool {
    if annex_devpg::binaries_available() {
        return true;
    }
    skip_or_fail(
        "no PostgreSQL binaries for the LocalPostgres tests: install postgresql-15 or set ANNEX_PG_BIN",
    );
    false
}

/// Fails under `CI=true`; elsewhere prints one loud notice per test binary.
fn skip_or_fail(message: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    // Straight to stderr: the test harness captures `eprintln!` of passing tests.
    static NOTICE: std::sync::Once = std::sync::Once::new();
    NOTICE.call_once(|| {
        let bar = "!".repeat(78);
        let _ = writeln!(
            std::io::stderr(),
            "\n{bar}\nSKIPPING Postgres tests: {message}\n{bar}\n"
        );
    });
}

/// One database per test, dropped at the end of a passing test.
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// A fresh, empty database; None (after a notice) when Postgres cannot be had outside CI.
    pub async fn create(case: &str) -> Option<TestDatabase> {
        let name = format!(
            "t_{}_{}",
            case.to_lowercase(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        let (admin_url, url) = match server().await {
            Server::External { url } => (url.clone(), with_database(url, &name)),
            Server::Local(cluster) => (cluster.url_for("postgres"), cluster.url_for(&name)),
            Server::Missing => {
                skip_or_fail(
                    "no PostgreSQL for this test: set DATABASE_URL, or install postgresql-15 \
                     (or set ANNEX_PG_BIN) so a throwaway cluster can be started",
                );
                return None;
            }
            Server::Broken(message) => panic!("{message}"),
        };
        let admin = connect(&admin_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| {
                panic!("create test database {name}: {e} (the DATABASE_URL role needs CREATEDB)")
            });
        Some(TestDatabase {
            url,
            admin_url,
            name,
        })
    }

    pub async fn connect(&self) -> PgStore {
        let config = PgStoreConfig {
            url: self.url.clone(),
            max_connections: 10,
        };
        PgStore::connect(config)
            .await
            .unwrap_or_else(|e| panic!("connect to test database {}: {e}", self.name))
    }

    /// A plain client on the test database, for checks below the Store trait.
    pub async fn sql(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    pub async fn drop_database(self) {
        let admin = connect(&self.admin_url).await;
        if let Err(e) = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
        {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to postgres: {e}"));
    tokio::spawn(connection);
    client
}

/// `url` with its database replaced by `database` (URL or key=value form).
fn with_database(url: &str, database: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("{url} dbname={database}");
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    format!("{scheme}://{authority}/{database}{query}")
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://u:p@h:5/db?sslmode=disable", "t"),
            "postgres://u:p@h:5/t?sslmode=disable"
        );
        assert_eq!(with_database("postgresql://h", "t"), "postgresql://h/t");
        assert_eq!(
            with_database("host=h user=u", "t"),
            "host=h user=u dbname=t"
        );
    }
}
