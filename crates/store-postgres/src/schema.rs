//! The schema: versioned migrations (applied under an advisory lock, so stores starting
//! at once do not race) and the daily partitions of `dn_samples`.

use std::collections::BTreeSet;

use parking_lot::Mutex;
use tokio_postgres::GenericClient;
use tokio_postgres::error::SqlState;

use super::pg_error;
use datanexus_store::{Error, Result};

/// Migrations in order: (version, SQL). Each runs in one transaction, once.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_results.sql")),
];

/// The schema version this program writes.
pub const SCHEMA_VERSION: i32 = 2;

/// Advisory lock keys (ASCII "dnmigrat" and "dnpartit").
const MIGRATION_LOCK: i64 = 0x646e_6d69_6772_6174;
const PARTITION_LOCK: i64 = 0x646e_7061_7274_6974;

/// How long partition DDL waits for its lock on `dn_samples` (it needs the table to
/// itself, and would otherwise queue every read and write behind a long query).
const DDL_LOCK_TIMEOUT: &str = "5s";

/// Nanoseconds in a day: the width of one samples partition.
pub(crate) const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// Brings the schema to [`SCHEMA_VERSION`]; returns the version found before.
///
/// # Errors
/// PostgreSQL failures; [`Error::Invalid`] when the database was migrated by a newer
/// program.
pub(crate) async fn migrate(client: &mut tokio_postgres::Client, target: &str) -> Result<i32> {
    let pg = |e| pg_error(target, e);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    let migrated = apply(client, target).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg);
    let before = migrated?;
    unlocked?;
    Ok(before)
}

async fn apply(client: &mut tokio_postgres::Client, target: &str) -> Result<i32> {
    let pg = |e| pg_error(target, e);
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS dn_schema_version (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(pg)?;
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM dn_schema_version",
            &[],
        )
        .await
        .map_err(pg)?;
    let before: i32 = row.get(0);
    if before > SCHEMA_VERSION {
        return Err(Error::Invalid(format!(
            "the database at {target} has schema version {before}, newer than this \
             program's {SCHEMA_VERSION}: upgrade datanexus"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > before) {
        let tx = client.transaction().await.map_err(pg)?;
        tx.batch_execute(sql).await.map_err(pg)?;
        tx.execute(
            "INSERT INTO dn_schema_version (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        tracing::info!(version, target, "postgres store schema migrated");
    }
    Ok(before)
}

/// The day (since the Unix epoch) of a timestamp.
pub(crate) fn day_of(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(DAY_NS)
}

/// `dn_samples_YYYYMMDD` for a day.
pub(crate) fn partition_name(day: i64) -> String {
    let date = chrono::DateTime::from_timestamp(day.saturating_mul(86_400), 0)
        .map(|d| d.format("%Y%m%d").to_string())
        .unwrap_or_else(|| format!("d{day}"));
    format!("dn_samples_{date}")
}

/// The day a partition name stands for.
fn partition_day(name: &str) -> Option<i64> {
    let date = name.strip_prefix("dn_samples_")?;
    let date = chrono::NaiveDate::parse_from_str(date, "%Y%m%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    Some((date - epoch).num_days())
}

/// Bounds of a day's partition as SQL literals (`MINVALUE`/`MAXVALUE` at the ends of
/// the `bigint` range).
fn bounds(day: i64) -> (String, String) {
    let lo = day
        .checked_mul(DAY_NS)
        .map_or("MINVALUE".to_owned(), |v| v.to_string());
    let hi = day
        .checked_add(1)
        .and_then(|d| d.checked_mul(DAY_NS))
        .map_or("MAXVALUE".to_owned(), |v| v.to_string());
    (lo, hi)
}

/// The partitions known to exist (created by this process or found at start).
#[derive(Debug, Default)]
pub(crate) struct Partitions {
    days: Mutex<BTreeSet<i64>>,
}

impl Partitions {
    /// Reads the existing partitions.
    ///
    /// # Errors
    /// PostgreSQL failures.
    pub(crate) async fn load(&self, client: &tokio_postgres::Client, target: &str) -> Result<()> {
        let found = existing(client, target).await?;
        *self.days.lock() = found.into_iter().map(|(day, _)| day).collect();
        Ok(())
    }

    /// Forgets which partitions exist (they are created again as needed).
    pub(crate) fn forget(&self) {
        self.days.lock().clear();
    }

    /// Creates the daily partitions of `days` that lie in the window of yesterday to
    /// `ahead` days from today and are not known to exist; samples of other days go to
    /// the default partition. A day whose samples already rest in the default partition
    /// (written before its partition could be created) stays there.
    ///
    /// # Errors
    /// PostgreSQL failures (a lock not granted within [`DDL_LOCK_TIMEOUT`] is
    /// retryable).
    pub(crate) async fn ensure(
        &self,
        client: &mut deadpool_postgres::Object,
        target: &str,
        days: impl IntoIterator<Item = i64>,
        today: i64,
        ahead: i64,
    ) -> Result<()> {
        let window = today.saturating_sub(1)..=today.saturating_add(ahead);
        let missing: Vec<i64> = {
            let known = self.days.lock();
            days.into_iter()
                .filter(|d| window.contains(d) && !known.contains(d))
                .collect()
        };
        let pg = |e| pg_error(target, e);
        for day in missing {
            let tx = ddl_transaction(client, target).await?;
            let (lo, hi) = bounds(day);
            let created = tx
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF dn_samples FOR VALUES FROM ({lo}) TO ({hi})",
                    partition_name(day)
                ))
                .await;
            match created {
                Ok(()) => tx.commit().await.map_err(pg)?,
                // The default partition already holds samples of that day.
                Err(e) if e.code() == Some(&SqlState::CHECK_VIOLATION) => {
                    tracing::info!(day = %partition_name(day), "samples of this day stay in dn_samples_default");
                }
                Err(e) => return Err(pg(e)),
            }
            self.days.lock().insert(day);
        }
        Ok(())
    }

    /// Drops every partition whose days all lie before `cutoff_ns`, and deletes the
    /// older samples of the default partition; returns how many partitions.
    ///
    /// # Errors
    /// PostgreSQL failures.
    pub(crate) async fn drop_before(
        &self,
        client: &mut deadpool_postgres::Object,
        target: &str,
        cutoff_ns: i64,
    ) -> Result<usize> {
        let pg = |e| pg_error(target, e);
        let tx = ddl_transaction(client, target).await?;
        tx.execute(
            "DELETE FROM dn_samples_default WHERE ts < $1",
            &[&cutoff_ns],
        )
        .await
        .map_err(pg)?;
        let expired: Vec<(i64, String)> = existing(&*tx, target)
            .await?
            .into_iter()
            .filter(|(day, _)| {
                day.checked_add(1)
                    .and_then(|d| d.checked_mul(DAY_NS))
                    .is_some_and(|end| end <= cutoff_ns)
            })
            .collect();
        for (_, name) in &expired {
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        let mut known = self.days.lock();
        for (day, _) in &expired {
            known.remove(day);
        }
        Ok(expired.len())
    }
}

/// A transaction for partition DDL: serialized between stores by the partition lock,
/// and giving up (retryably) after [`DDL_LOCK_TIMEOUT`] waiting for `dn_samples`.
async fn ddl_transaction<'a>(
    client: &'a mut deadpool_postgres::Object,
    target: &str,
) -> Result<deadpool_postgres::Transaction<'a>> {
    let pg = |e| pg_error(target, e);
    let tx = client.transaction().await.map_err(pg)?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
        .await
        .map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
        .await
        .map_err(pg)?;
    Ok(tx)
}

/// The partitions of `dn_samples` that exist: (day, table name).
async fn existing(client: &impl GenericClient, target: &str) -> Result<Vec<(i64, String)>> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'dn_samples'::regclass",
            &[],
        )
        .await
        .map_err(|e| pg_error(target, e))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            Some((partition_day(&name)?, name))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_named_by_their_utc_day() {
        let ts = 1_700_000_000_000_000_000; // 2023-11-14T22:13:20Z
        let day = day_of(ts);
        assert_eq!(partition_name(day), "dn_samples_20231114");
        assert_eq!(partition_day("dn_samples_20231114"), Some(day));
        assert_eq!(partition_name(day_of(-1)), "dn_samples_19691231");
        assert_eq!(partition_day("dn_samples_19691231"), Some(-1));
        assert_eq!(partition_day("dn_samples_x"), None);
    }

    #[test]
    fn bounds_cover_the_whole_day_and_the_ends_of_the_range() {
        let (lo, hi) = bounds(1);
        assert_eq!(
            (lo.as_str(), hi.as_str()),
            ("86400000000000", "172800000000000")
        );
        assert_eq!(bounds(day_of(i64::MAX)).1, "MAXVALUE");
        assert_eq!(bounds(day_of(i64::MIN)).0, "MINVALUE");
    }
}
