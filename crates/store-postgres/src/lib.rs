//! The PostgreSQL backend: points, events and stream results in a PostgreSQL database,
//! for users who already run one (psql, Grafana's PostgreSQL data source, dbt, backups,
//! replicas).
//!
//! # Schema (version 2: `src/migrations/0001_initial.sql`, `0002_results.sql`)
//! ```text
//! dn_schema_version (version, applied_at)            migrations applied, one row each
//! dn_measurements   (measurement PK, kind, help)      type and help of each measurement
//! dn_series         (series_id PK, measurement, field, labels jsonb)
//!                   index (measurement, field); GIN (labels)
//! dn_samples        (series_id, ts, value) PK (series_id, ts)
//!                   PARTITION BY RANGE (ts): one table dn_samples_YYYYMMDD per UTC day
//!                   from yesterday to `partitions_ahead_days` ahead, other days in
//!                   dn_samples_default
//! dn_events         (id PK, source_id, ts, payload jsonb)
//!                   index (source_id, ts, id); index (ts, id); GIN (payload)
//! dn_results        (client_id, seq, event_partition, event_offset, event_name, number,
//!                   value | error, received_ns, processed_ns, processor_id)
//!                   PK (client_id, seq): a replay reads its rows by it; index (processed_ns)
//! dn_flush          (id PK, flushed_at)              written by each flush (see write.rs)
//! dn_points         view: measurement, field, labels, time (timestamptz), ts_ns, value
//! dn_events_v       view: id, source_id, time (timestamptz), ts_ns, payload
//! dn_results_v      view: client_id, seq, event_name, number, value, error, processed_at
//! ```
//! Timestamps are nanoseconds since the Unix epoch (`bigint`), as in the embedded store;
//! `series_id` is the stable xxh3 series id as a signed 64-bit integer.
//!
//! # Invariants
//! - The schema is created and migrated by [`PostgresStore::open`] under an advisory
//!   lock: stores starting at once apply each migration exactly once.
//! - Writes are idempotent: samples on (series_id, ts) — a rewrite replaces the value —
//!   events on id, results on (client_id, seq). Written data is visible at once and
//!   durable after [`Store::flush`] (see `write.rs`).
//! - Daily sample partitions from yesterday to `partitions_ahead_days` ahead are created
//!   at open, by retention and on demand, under an advisory lock with a lock timeout;
//!   samples of other days (backfill, far future) rest in `dn_samples_default`, so a
//!   batch spread over years never creates thousands of tables. Retention drops whole
//!   partitions whose day ended before the cutoff, deletes older samples of the default
//!   partition, older events and results processed before it; series rows are kept (a measurement whose samples all
//!   expired answers with no samples rather than "unknown").
//! - Every query is pushed down to SQL; the aggregates follow [`datanexus_store::aggregate`]: NaN
//!   skipped, quantiles by `percentile_cont` (linear interpolation between closest
//!   ranks, as numpy's default). Sums may differ from the embedded store's in the last
//!   bits (another summation order); a sum beyond `f64` is an invalid query here where
//!   the embedded store answers ±inf.
//! - Connection failures are [`Error::Unavailable`] naming the server
//!   (`postgresql at host:port/db: …`); the pipeline retries them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use datanexus_model::{MetricType, Point};
use deadpool_postgres::{Object, Pool, PoolError};
use parking_lot::Mutex;

use datanexus_store::{
    AggregateParts, AggregateQuery, AggregateResult, DatasetInfo, Error, EventPage, EventQuery,
    FlushReport, Latest, QueryResult, Result, ResultPage, ResultQuery, SeriesKey, SeriesQuery,
    Store, StoredEvent, StoredResult,
};

mod connect;
mod read;
mod schema;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
#[cfg(test)]
mod tests;
mod write;

pub use connect::PostgresOptions;
pub use schema::SCHEMA_VERSION;

/// Type and help text of a measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    kind: MetricType,
    help: Option<String>,
}

/// Shared state of a [`PostgresStore`].
struct Inner {
    pool: Pool,
    /// `host:port/db`, for messages.
    target: String,
    options: PostgresOptions,
    /// Series ids known to be in `dn_series`.
    series: Mutex<HashSet<u64>>,
    /// Measurement metadata as last written by this process.
    meta: Mutex<HashMap<String, Meta>>,
    partitions: schema::Partitions,
    /// Rows written since the last flush.
    written: AtomicU64,
    stopped: AtomicBool,
}

impl Inner {
    /// A pooled connection; [`Error::Closed`] after stop.
    async fn client(&self) -> Result<Object> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => pg_error(&self.target, e),
            PoolError::Closed => Error::Closed,
            other => Error::Unavailable(format!("postgresql at {}: {other}", self.target)),
        })
    }

    /// Today (a day number) and how many days ahead partitions are kept.
    fn partition_window(&self) -> (i64, i64) {
        (
            schema::day_of(now_ns()),
            i64::from(self.options.partitions_ahead_days),
        )
    }

    fn note_written(&self, rows: usize) {
        self.written.fetch_add(rows as u64, Ordering::Relaxed);
    }
}

/// One connection to `url` outside a store (export sources read other databases): the
/// store's URL syntax, TLS modes (`sslmode`, `sslrootcert`) and error messages. Returns
/// the client and how the server is named in messages (`host:port/db`, never the
/// password); the connection runs on a spawned task until the client is dropped.
///
/// # Errors
/// [`Error::Invalid`] for a bad URL, [`Error::Unavailable`] naming the server and the
/// cause when it cannot be reached or refuses the login.
pub async fn connect(
    url: &str,
    login: &Login,
    timeout: std::time::Duration,
) -> Result<(tokio_postgres::Client, String)> {
    let mut target = connect::target(url, timeout)?;
    if let Some(user) = &login.user {
        target.config.user(user);
    }
    if let Some(password) = &login.password {
        target.config.password(password);
    }
    if let Some(db) = &login.dbname {
        target.config.dbname(db);
    }
    target.display = connect::describe(&target.config);
    let (client, connection) = target
        .config
        .connect(target.tls.clone())
        .await
        .map_err(|e| pg_error(&target.display, e))?;
    let display = target.display;
    let name = display.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(server = %name, error = %e, "postgres connection ended");
        }
    });
    Ok((client, display))
}

/// What [`connect`] sets over the URL's own user, password and database (each when
/// given).
#[derive(Clone, Default)]
pub struct Login {
    /// The role to log in as.
    pub user: Option<String>,
    /// Its password.
    pub password: Option<String>,
    /// The database.
    pub dbname: Option<String>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("dbname", &self.dbname)
            .finish()
    }
}

/// The store's mapping of a PostgreSQL error on `target` (see [`connect`]), for code
/// that runs its own queries on such a connection.
pub fn error(target: &str, e: tokio_postgres::Error) -> Error {
    pg_error(target, e)
}

/// Maps a PostgreSQL error: connection problems (and a server shutting down, starting
/// up or out of resources) are [`Error::Unavailable`], the rest [`Error::Internal`].
fn pg_error(target: &str, e: tokio_postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        // The cause matters (a refused certificate, a refused connection): name it.
        let mut message = format!("postgresql at {target}: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        return Error::Unavailable(message);
    };
    let code = db.code().code();
    let message = format!("postgresql at {target}: {} ({code})", db.message());
    // 08: connection exception; 53: insufficient resources; 57: operator intervention
    // (shutdown, cannot connect now); 40: rollback (serialization, deadlock).
    if ["08", "53", "57", "40"].iter().any(|c| code.starts_with(c)) {
        Error::Unavailable(message)
    } else if ["28P01", "28000", "3D000", "23514"].contains(&code) {
        // Bad password / no such role / no such database: the operator must act;
        // a missing partition (dropped by another process) is created on the retry.
        Error::Unavailable(message)
    } else {
        Error::Internal(message)
    }
}

/// Points, events and results in PostgreSQL.
pub struct PostgresStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects, creates or migrates the schema, and creates the partitions ahead.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad URL or option; [`Error::Unavailable`] naming the
    /// server and the cause when it cannot be reached or refuses the login.
    pub async fn open(options: PostgresOptions) -> Result<Self> {
        if options.pool_size == 0 {
            return Err(Error::Invalid("store.pool_size must be at least 1".into()));
        }
        let target = connect::target(&options.url, options.connect_timeout)?;
        let pool = connect::pool(&target, options.pool_size, options.connect_timeout)?;
        let inner = Arc::new(Inner {
            pool,
            target: target.display.clone(),
            options,
            series: Mutex::new(HashSet::new()),
            meta: Mutex::new(HashMap::new()),
            partitions: schema::Partitions::default(),
            written: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        {
            let mut client = inner.client().await?;
            schema::migrate(&mut client, &inner.target).await?;
            inner.partitions.load(&client, &inner.target).await?;
        }
        let store = PostgresStore { inner };
        store.create_partitions_ahead().await?;
        tracing::info!(target = %store.inner.target, "postgres store open");
        Ok(store)
    }

    /// `host:port/db` of the server (no credentials).
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    async fn create_partitions_ahead(&self) -> Result<()> {
        let (today, ahead) = self.inner.partition_window();
        let mut client = self.inner.client().await?;
        self.inner
            .partitions
            .ensure(
                &mut client,
                &self.inner.target,
                today - 1..=today + ahead,
                today,
                ahead,
            )
            .await
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[async_trait]
impl Store for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn write_points(&self, points: &[Point]) -> Result<()> {
        write::write_points(&self.inner, points).await
    }

    async fn write_events(&self, events: &[StoredEvent]) -> Result<()> {
        write::write_events(&self.inner, events).await
    }

    async fn write_results(&self, results: &[StoredResult]) -> Result<()> {
        write::write_results(&self.inner, results).await
    }

    async fn results(&self, query: &ResultQuery) -> Result<ResultPage> {
        read::results(&self.inner, query).await
    }

    async fn flush(&self) -> Result<FlushReport> {
        let rows = self.inner.written.swap(0, Ordering::AcqRel);
        if let Err(e) = write::flush(&self.inner).await {
            self.inner.written.fetch_add(rows, Ordering::AcqRel);
            return Err(e);
        }
        Ok(FlushReport { rows, bytes: 0 })
    }

    async fn query(&self, query: &SeriesQuery) -> Result<QueryResult> {
        read::query(&self.inner, query).await
    }

    async fn aggregate(&self, query: &AggregateQuery) -> Result<AggregateResult> {
        read::aggregate(&self.inner, query).await
    }

    async fn delete_series(&self, series: &[(SeriesKey, i64)]) -> Result<u64> {
        // The same ids as the embedded store's (xxh3), as signed integers.
        let ids: Vec<i64> = series.iter().map(|(k, _)| k.id() as i64).collect();
        let up_to: Vec<i64> = series.iter().map(|(_, t)| *t).collect();
        let client = self.inner.client().await?;
        client
            .execute(
                "DELETE FROM dn_samples d USING unnest($1::bigint[], $2::bigint[]) AS k(id, up_to) \
                 WHERE d.series_id = k.id AND d.ts <= k.up_to",
                &[&ids, &up_to],
            )
            .await
            .map_err(|e| pg_error(&self.inner.target, e))
    }

    async fn aggregate_parts(&self, query: &AggregateQuery) -> Result<AggregateParts> {
        read::aggregate_parts(&self.inner, query).await
    }

    async fn events(&self, query: &EventQuery) -> Result<EventPage> {
        read::events(&self.inner, query).await
    }

    async fn datasets(&self) -> Result<Vec<DatasetInfo>> {
        read::datasets(&self.inner).await
    }

    async fn latest(&self) -> Result<Vec<Latest>> {
        read::latest(&self.inner).await
    }

    async fn ready(&self) -> Result<()> {
        let client = self.inner.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| pg_error(&self.inner.target, e))?;
        Ok(())
    }

    async fn enforce_retention(&self) -> Result<()> {
        self.create_partitions_ahead().await?;
        let Some(age) = self.inner.options.retention_max_age else {
            return Ok(());
        };
        let age_ns = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
        let cutoff = now_ns().saturating_sub(age_ns);
        let target = self.inner.target.as_str();
        let mut client = self.inner.client().await?;
        let dropped = self
            .inner
            .partitions
            .drop_before(&mut client, target, cutoff)
            .await?;
        let events = client
            .execute("DELETE FROM dn_events WHERE ts < $1", &[&cutoff])
            .await
            .map_err(|e| pg_error(target, e))?;
        let results = client
            .execute("DELETE FROM dn_results WHERE processed_ns < $1", &[&cutoff])
            .await
            .map_err(|e| pg_error(target, e))?;
        if dropped > 0 || events > 0 || results > 0 {
            tracing::info!(
                partitions = dropped,
                events,
                results,
                "postgres store retention"
            );
        }
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        if self.inner.stopped.load(Ordering::Acquire) {
            return Ok(());
        }
        let flushed = write::flush(&self.inner).await;
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.pool.close();
        flushed
    }
}
