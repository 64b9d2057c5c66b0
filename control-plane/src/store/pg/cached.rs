//! Statements prepared once per pooled connection.
//!
//! tokio-postgres prepares a `&str` query on every call: a Parse/Describe
//! round trip and, for the install-view join, most of the query's Postgres
//! CPU (planning). Host-service calls run these statements on every guest
//! request, so they go through deadpool's per-connection statement cache
//! instead: the same SQL text is parsed once per connection and then only
//! bound and executed.

use std::future::Future;

use deadpool_postgres::{Object, Transaction};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// `query`, `query_opt`, `query_one` and `execute` with a cached statement.
pub(super) trait Cached {
    fn query_c(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> impl Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send;
    fn query_opt_c(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> impl Future<Output = Result<Option<Row>, tokio_postgres::Error>> + Send;
    fn query_one_c(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> impl Future<Output = Result<Row, tokio_postgres::Error>> + Send;
    fn execute_c(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> impl Future<Output = Result<u64, tokio_postgres::Error>> + Send;
}

macro_rules! cached_impl {
    ($ty:ty) => {
        impl Cached for $ty {
            async fn query_c(
                &self,
                sql: &str,
                params: Params<'_>,
            ) -> Result<Vec<Row>, tokio_postgres::Error> {
                let stmt = self.prepare_cached(sql).await?;
                self.query(&stmt, params).await
            }
            async fn query_opt_c(
                &self,
                sql: &str,
                params: Params<'_>,
            ) -> Result<Option<Row>, tokio_postgres::Error> {
                let stmt = self.prepare_cached(sql).await?;
                self.query_opt(&stmt, params).await
            }
            async fn query_one_c(
                &self,
                sql: &str,
                params: Params<'_>,
            ) -> Result<Row, tokio_postgres::Error> {
                let stmt = self.prepare_cached(sql).await?;
                self.query_one(&stmt, params).await
            }
            async fn execute_c(
                &self,
                sql: &str,
                params: Params<'_>,
            ) -> Result<u64, tokio_postgres::Error> {
                let stmt = self.prepare_cached(sql).await?;
                self.execute(&stmt, params).await
            }
        }
    };
}

cached_impl!(Object);
cached_impl!(Transaction<'_>);
