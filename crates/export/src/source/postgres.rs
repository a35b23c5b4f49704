//! A PostgreSQL table as a source: columns from the catalog (names quoted by
//! `quote_ident`), rows by time range through a portal, `PAGE_ROWS` at a time, in one
//! read-only transaction per range, on a connection of its own (ranges are read
//! concurrently, and a retried range reconnects). Sessions use the time zone UTC, so a
//! `timestamp` column (without time zone) is read as UTC.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};

use super::{Column, ColumnKind, DatasetRef, PAGE_ROWS, Role, Row, Schema, Source, Value};
use crate::{ConnectionSpec, Error, Result};

/// A table of a PostgreSQL database.
pub(super) struct PostgresSource {
    url: String,
    login: datanexus_store_postgres::Login,
    timeout: Duration,
    server: String,
    /// `"schema"."table"`, quoted.
    relation: String,
    /// The time column, quoted.
    time: String,
    /// One select expression per column, in schema order.
    selects: Vec<String>,
    schema: Schema,
}

/// Column types read as integers, floats, booleans; `timestamp`s may be the time.
const INT_TYPES: [&str; 4] = ["int2", "int4", "int8", "oid"];
const FLOAT_TYPES: [&str; 3] = ["float4", "float8", "numeric"];
const TEXT_TYPES: [&str; 5] = ["text", "varchar", "bpchar", "name", "citext"];
const TIME_TYPES: [&str; 2] = ["timestamptz", "timestamp"];

/// The tables, views and materialized views with a timestamp column that the user may
/// read (not partitions, not the catalogs), as `to_regclass` takes them.
pub(super) async fn tables(
    spec: &ConnectionSpec,
    database: Option<&str>,
    timeout: Duration,
) -> Result<Vec<String>> {
    let login = login(spec, database);
    let (client, server) = connect(&spec.url, &login, timeout).await?;
    let rows = client
        .query(
            "SELECT DISTINCT CASE WHEN n.nspname = 'public' THEN quote_ident(c.relname) \
                    ELSE quote_ident(n.nspname) || '.' || quote_ident(c.relname) END \
             FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid \
             JOIN pg_type t ON t.oid = a.atttypid \
             WHERE c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' \
               AND a.attnum > 0 AND NOT a.attisdropped AND t.typname = ANY($1) \
               AND has_table_privilege(c.oid, 'SELECT') \
             ORDER BY 1",
            &[&TIME_TYPES.as_slice()],
        )
        .await
        .map_err(|e| store_error(datanexus_store_postgres::error(&server, e)))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn login(spec: &ConnectionSpec, database: Option<&str>) -> datanexus_store_postgres::Login {
    datanexus_store_postgres::Login {
        user: spec.username.clone(),
        password: spec.password.clone(),
        dbname: database
            .map(str::to_owned)
            .or_else(|| spec.database.clone()),
    }
}

/// The query of a dataset named by a query (`SELECT …` or `WITH …`) rather than a
/// table: a table name never starts with either word followed by a space unless it is
/// quoted, and a quoted one starts with `"`.
fn query_of(table: &str) -> Option<&str> {
    let t = table.trim();
    let word = t.split_whitespace().next()?;
    let rest = t.get(word.len()..)?;
    ((word.eq_ignore_ascii_case("select") || word.eq_ignore_ascii_case("with"))
        && rest.starts_with(char::is_whitespace))
    .then_some(t.trim_end_matches(';').trim_end())
}

/// A column: its name, its quoted name, its type's name.
type ColumnDef = (String, String, String);

/// The relation and columns of table `table`, looked up in the catalog.
async fn table_columns(
    client: &Client,
    server: &str,
    table: &str,
) -> Result<(String, Vec<ColumnDef>)> {
    let rows = client
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                    a.attname::text, quote_ident(a.attname), t.typname::text \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&table],
        )
        .await
        .map_err(|e| match e.as_db_error() {
            // to_regclass refuses a name that is not a (qualified) identifier.
            Some(db) if db.code().code().starts_with("42") => {
                Error::Invalid(format!("invalid table name {table:?}: {}", db.message()))
            }
            _ => store_error(datanexus_store_postgres::error(server, e)),
        })?;
    let Some(first) = rows.first() else {
        return Err(Error::NotFound(format!(
            "postgresql at {server} has no table {table:?}"
        )));
    };
    let relation: String = first.get(0);
    Ok((
        relation,
        rows.iter()
            .map(|r| (r.get(1), r.get(2), r.get(3)))
            .collect(),
    ))
}

/// The relation (the query as a subquery) and result columns of `query`, from the
/// server's description of the prepared statement (nothing is run).
async fn query_columns(
    client: &Client,
    server: &str,
    query: &str,
) -> Result<(String, Vec<ColumnDef>)> {
    let relation = format!("({query}) AS q");
    let statement = client
        .prepare(&format!("SELECT * FROM {relation}"))
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => Error::Invalid(format!("invalid query: {}", db.message())),
            None => store_error(datanexus_store_postgres::error(server, e)),
        })?;
    let columns = statement
        .columns()
        .iter()
        .map(|c| {
            let name = c.name().to_owned();
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            (name, quoted, c.type_().name().to_owned())
        })
        .collect();
    Ok((relation, columns))
}

impl PostgresSource {
    /// Connects and reads the table's (or query's) columns.
    pub(super) async fn open(
        spec: &ConnectionSpec,
        dataset: &DatasetRef,
        timeout: Duration,
    ) -> Result<Self> {
        let login = login(spec, dataset.database.as_deref());
        let (client, server) = connect(&spec.url, &login, timeout).await?;
        let (relation, all) = if let Some(query) = query_of(&dataset.table) {
            query_columns(&client, &server, query).await?
        } else {
            table_columns(&client, &server, &dataset.table).await?
        };
        let times: Vec<&(String, String, String)> = all
            .iter()
            .filter(|(_, _, ty)| TIME_TYPES.contains(&ty.as_str()))
            .collect();
        let time = match &dataset.time_column {
            Some(wanted) => {
                let found = all.iter().find(|(name, _, _)| name == wanted).ok_or_else(|| {
                    Error::Invalid(format!("table {relation} has no column {wanted:?}"))
                })?;
                if !TIME_TYPES.contains(&found.2.as_str()) {
                    return Err(Error::Invalid(format!(
                        "column {wanted:?} of {relation} is a {}, not a timestamp",
                        found.2
                    )));
                }
                found
            }
            None => match times.as_slice() {
                [only] => *only,
                [] => {
                    return Err(Error::Invalid(format!(
                        "table {relation} has no timestamp column to export by"
                    )));
                }
                several => several
                    .iter()
                    .find(|(name, _, _)| name == "time")
                    .copied()
                    .ok_or_else(|| {
                        let names: Vec<&str> =
                            several.iter().map(|(n, _, _)| n.as_str()).collect();
                        Error::Invalid(format!(
                            "table {relation} has several timestamp columns ({}): name one with time_column",
                            names.join(", ")
                        ))
                    })?,
            },
        };
        let mut columns = Vec::new();
        let mut selects = Vec::new();
        for (name, quoted, ty) in &all {
            if name == &time.0 {
                continue;
            }
            let (kind, role, select) = if ty == "bool" {
                (ColumnKind::Bool, Role::Field, quoted.clone())
            } else if INT_TYPES.contains(&ty.as_str()) {
                (ColumnKind::Int, Role::Field, format!("{quoted}::int8"))
            } else if FLOAT_TYPES.contains(&ty.as_str()) {
                (ColumnKind::Float, Role::Field, format!("{quoted}::float8"))
            } else if TEXT_TYPES.contains(&ty.as_str()) {
                (ColumnKind::Text, Role::Tag, format!("{quoted}::text"))
            } else {
                (ColumnKind::Text, Role::Field, format!("{quoted}::text"))
            };
            columns.push(Column {
                name: name.clone(),
                kind,
                role,
            });
            selects.push(select);
        }
        let schema = Schema {
            dataset: dataset.table.clone(),
            time_column: time.0.clone(),
            columns,
        };
        Ok(PostgresSource {
            url: spec.url.clone(),
            login,
            timeout,
            server,
            relation,
            time: time.1.clone(),
            selects,
            schema,
        })
    }

    async fn client(&self) -> Result<Client> {
        connect(&self.url, &self.login, self.timeout)
            .await
            .map(|(client, _)| client)
    }

    /// A read-only transaction on `client`: neither a table nor a query dataset can
    /// write through an export.
    async fn read_only<'a>(&self, client: &'a mut Client) -> Result<Transaction<'a>> {
        client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(|e| self.pg(e))
    }

    fn pg(&self, e: tokio_postgres::Error) -> Error {
        store_error(datanexus_store_postgres::error(&self.server, e))
    }

    /// The time column as nanoseconds (exact for PostgreSQL's microseconds).
    fn time_ns(&self) -> String {
        epoch_ns(&self.time)
    }
}

#[async_trait]
impl Source for PostgresSource {
    fn name(&self) -> String {
        format!("postgresql at {}, table {}", self.server, self.relation)
    }

    async fn schema(&self) -> Result<Schema> {
        Ok(self.schema.clone())
    }

    async fn time_range(&self) -> Result<Option<(i64, i64)>> {
        let t = &self.time;
        let sql = format!(
            "SELECT {}, {} FROM {}",
            epoch_ns(&format!("min({t})")),
            epoch_ns(&format!("max({t})")),
            self.relation
        );
        // Read-only: a query dataset may not write (a data-modifying WITH).
        let mut client = self.client().await?;
        let tx = self.read_only(&mut client).await?;
        let row = tx.query_one(&sql, &[]).await.map_err(|e| self.pg(e))?;
        let (lo, hi): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
        Ok(lo.zip(hi))
    }

    async fn read(
        &self,
        schema: &Schema,
        start_ns: i64,
        end_ns: i64,
        out: &mpsc::Sender<Vec<Row>>,
    ) -> Result<u64> {
        let mut list = vec![self.time_ns()];
        list.extend(self.selects.iter().cloned());
        let t = &self.time;
        let sql = format!(
            "SELECT {} FROM {} WHERE {t} >= $1 AND {t} < $2 ORDER BY {t}",
            list.join(", "),
            self.relation
        );
        let mut client = self.client().await?;
        let tx = self.read_only(&mut client).await?;
        let statement = tx.prepare(&sql).await.map_err(|e| self.pg(e))?;
        let (start, end) = (system_time(start_ns), system_time(end_ns));
        let params: [&(dyn ToSql + Sync); 2] = [&start, &end];
        let portal = tx.bind(&statement, &params).await.map_err(|e| self.pg(e))?;
        let mut n = 0u64;
        loop {
            let rows = tx
                .query_portal(&portal, PAGE_ROWS as i32)
                .await
                .map_err(|e| self.pg(e))?;
            if rows.is_empty() {
                return Ok(n);
            }
            let page: Vec<Row> = rows
                .iter()
                .map(|r| convert(schema, r))
                .collect::<Result<_>>()?;
            n += page.len() as u64;
            let last = page.len() < PAGE_ROWS;
            if out.send(page).await.is_err() {
                return Ok(n);
            }
            if last {
                return Ok(n);
            }
        }
    }
}

/// A row of the select list (time first, then the schema's columns).
fn convert(schema: &Schema, r: &tokio_postgres::Row) -> Result<Row> {
    let bad = |e: tokio_postgres::Error| Error::Invalid(format!("unreadable value: {e}"));
    let time_ns: Option<i64> = r.try_get(0).map_err(bad)?;
    let mut values = Vec::with_capacity(schema.columns.len());
    for (i, column) in schema.columns.iter().enumerate() {
        let at = i + 1;
        let value = match column.kind {
            ColumnKind::Bool => r
                .try_get::<_, Option<bool>>(at)
                .map_err(bad)?
                .map(Value::Bool),
            ColumnKind::Int => r
                .try_get::<_, Option<i64>>(at)
                .map_err(bad)?
                .map(Value::Int),
            ColumnKind::Float => r
                .try_get::<_, Option<f64>>(at)
                .map_err(bad)?
                .map(Value::Float),
            ColumnKind::Text => r
                .try_get::<_, Option<String>>(at)
                .map_err(bad)?
                .map(Value::Text),
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row {
        // The range filter excludes NULL times.
        time_ns: time_ns.unwrap_or(0),
        values,
    })
}

/// SQL for `t` (a timestamp) as nanoseconds since the epoch, exact: whole microseconds
/// first (PostgreSQL 13 and older answer `extract` as a double, ~0.1 µs off today,
/// which rounding to the microsecond undoes), then times 1,000.
fn epoch_ns(t: &str) -> String {
    format!("(round(extract(epoch from {t}) * 1000000)::int8 * 1000)")
}

/// Nanoseconds since the epoch as a `SystemTime` of whole microseconds, rounded up.
/// PostgreSQL keeps microseconds, so `ts >= ceil(start)` and `ts < ceil(end)` select
/// exactly the rows in `[start, end)` at any nanosecond bound, and adjacent ranges
/// still meet at the same instant: every row is read once.
fn system_time(ns: i64) -> SystemTime {
    let us = ns.div_euclid(1_000) + i64::from(ns.rem_euclid(1_000) != 0);
    let d = Duration::from_micros(us.unsigned_abs());
    if us >= 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    }
}

/// A connection in the time zone UTC, and how the server is named.
async fn connect(
    url: &str,
    login: &datanexus_store_postgres::Login,
    timeout: Duration,
) -> Result<(Client, String)> {
    let (client, server) = datanexus_store_postgres::connect(url, login, timeout)
        .await
        .map_err(store_error)?;
    client
        .batch_execute("SET TIME ZONE 'UTC'")
        .await
        .map_err(|e| store_error(datanexus_store_postgres::error(&server, e)))?;
    Ok((client, server))
}

/// A PostgreSQL failure as ours.
fn store_error(e: datanexus_store::Error) -> Error {
    match e {
        datanexus_store::Error::Invalid(m) => Error::Invalid(m),
        datanexus_store::Error::NotFound(m) => Error::NotFound(m),
        other => Error::Unreachable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_told_from_table_names() {
        assert_eq!(query_of("SELECT * FROM t;"), Some("SELECT * FROM t"));
        assert_eq!(
            query_of("  with x as (select 1) select * from x"),
            Some("with x as (select 1) select * from x")
        );
        assert_eq!(query_of("select\n1"), Some("select\n1"));
        for table in [
            "readings",
            "public.readings",
            "selected",
            "\"select x\"",
            "select",
            "withdrawals",
        ] {
            assert_eq!(query_of(table), None, "{table}");
        }
    }

    #[test]
    fn bounds_round_up_to_whole_microseconds() {
        let micros = |ns| match system_time(ns).duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_micros() as i64,
            Err(e) => -(e.duration().as_micros() as i64),
        };
        assert_eq!(micros(5_000), 5);
        assert_eq!(micros(5_001), 6);
        assert_eq!(micros(5_999), 6);
        assert_eq!(micros(0), 0);
        assert_eq!(micros(-1), 0);
        assert_eq!(micros(-1_000), -1);
        assert_eq!(micros(-1_001), -1);
    }
}
