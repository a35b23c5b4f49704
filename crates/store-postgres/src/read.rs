//! Queries, pushed down to SQL. Series are selected in Rust from the measurement's
//! rows of `dn_series` (label equality, sorted by key as the embedded store does), and
//! their ids are passed as an array; ties in time are ordered by series key through the
//! array's ordinality.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use datanexus_model::Labels;
use deadpool_postgres::Object;
use serde_json::{Map, Value};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::write::{parse_kind, pg_text};
use super::{Inner, Meta, pg_error};
use datanexus_store::aggregate::Aggregate;
use datanexus_store::{
    AggregateQuery, AggregateResult, DatasetInfo, Error, EventPage, EventQuery, Latest, Outcome,
    QueryResult, Result, ResultPage, ResultQuery, Sample, Selector, SeriesKey, SeriesQuery,
    StoredEvent, StoredResult, Summary, TimeRange,
};

/// The unfinished aggregate of `q` (a control node merges it with other nodes'): every
/// sample of the range read by one statement, streamed, into [`AggregateParts`] — the
/// same pass as the embedded store's, so sums are exact and quantiles interpolated
/// alike.
pub(super) async fn aggregate_parts(
    inner: &Inner,
    q: &AggregateQuery,
) -> Result<datanexus_store::AggregateParts> {
    use futures::TryStreamExt;
    if let Some(step) = q.step_ns.filter(|s| *s <= 0) {
        return Err(Error::Invalid(format!("step {step} ns must be positive")));
    }
    let mut parts = datanexus_store::AggregateParts::new(&q.quantiles, &q.buckets)?;
    let template = parts.total.clone();
    let client = inner.client().await?;
    let series = select(inner, &client, &q.selector).await?;
    let ids: Vec<i64> = series.iter().map(|(id, _)| *id).collect();
    let (lo, hi) = bounds(&q.range);
    let params: [&(dyn ToSql + Sync); 3] = [&ids, &lo, &hi];
    let rows = client
        .query_raw(
            "SELECT series_id, ts, value FROM dn_samples \
             WHERE series_id = ANY($1) AND ts >= $2 AND ts <= $3",
            params.iter().map(|p| *p as &dyn ToSql),
        )
        .await
        .map_err(|e| pg_error(&inner.target, e))?;
    let mut rows = std::pin::pin!(rows);
    let mut seen = std::collections::HashSet::new();
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| pg_error(&inner.target, e))?
    {
        let (id, ts, value): (i64, i64, f64) = (row.get(0), row.get(1), row.get(2));
        seen.insert(id);
        parts.total.push(value);
        if let Some(step) = q.step_ns {
            parts
                .steps
                .entry(ts.div_euclid(step).saturating_mul(step))
                .or_insert_with(|| template.clone())
                .push(value);
        }
    }
    parts.series_count = seen.len() as u64;
    Ok(parts)
}

/// `NOT NaN`: PostgreSQL orders NaN above every number and `NaN = NaN`.
const NOT_NAN: &str = "value <> 'NaN'::float8";

fn bounds(range: &TimeRange) -> (i64, i64) {
    (
        range.start_ns.unwrap_or(i64::MIN),
        range.end_ns.unwrap_or(i64::MAX),
    )
}

fn sql_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Labels from their stored JSON object.
fn parse_labels(json: &str) -> Result<Labels> {
    let map: Map<String, Value> = serde_json::from_str(json)
        .map_err(|e| Error::Internal(format!("bad labels in dn_series: {e}")))?;
    Labels::new(map.into_iter().map(|(k, v)| {
        let v = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        (k, v)
    }))
    .map_err(|e| Error::Internal(format!("bad labels in dn_series: {e}")))
}

/// The selected series as (id, key), sorted by key; [`Error::NotFound`] when the
/// measurement has no series at all.
async fn select(
    inner: &Inner,
    client: &Object,
    selector: &Selector,
) -> Result<Vec<(i64, SeriesKey)>> {
    let measurement = pg_text(&selector.measurement);
    let rows = client
        .query(
            "SELECT series_id, field, labels::text FROM dn_series WHERE measurement = $1",
            &[&measurement.as_ref()],
        )
        .await
        .map_err(|e| pg_error(&inner.target, e))?;
    if rows.is_empty() {
        return Err(Error::NotFound(selector.measurement.clone()));
    }
    let mut out = Vec::new();
    for row in rows {
        let field: String = row.get(1);
        if field != pg_text(&selector.field) {
            continue;
        }
        let key = SeriesKey {
            measurement: selector.measurement.clone(),
            field,
            labels: parse_labels(row.get(2))?,
        };
        if selector.matches(&key) {
            out.push((row.get::<_, i64>(0), key));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// Raw samples ordered by (timestamp, series key), paged, with the total.
pub(super) async fn query(inner: &Inner, q: &SeriesQuery) -> Result<QueryResult> {
    let client = inner.client().await?;
    let series = select(inner, &client, &q.selector).await?;
    if series.is_empty() {
        return Ok(QueryResult::default());
    }
    let ids: Vec<i64> = series.iter().map(|(id, _)| *id).collect();
    let (lo, hi) = bounds(&q.range);
    let (limit, offset) = (sql_count(q.limit), sql_count(q.offset));
    let pg = |e| pg_error(&inner.target, e);
    let page_params: [&(dyn ToSql + Sync); 5] = [&ids, &lo, &hi, &limit, &offset];
    let total_params: [&(dyn ToSql + Sync); 3] = [&ids, &lo, &hi];
    let page = client.query(
        "SELECT k.ord, p.ts, p.value \
         FROM unnest($1::bigint[]) WITH ORDINALITY AS k(id, ord) \
         JOIN dn_samples p ON p.series_id = k.id \
         WHERE p.ts >= $2 AND p.ts <= $3 \
         ORDER BY p.ts, k.ord LIMIT $4 OFFSET $5",
        &page_params,
    );
    let total = client.query_one(
        "SELECT count(*) FROM dn_samples WHERE series_id = ANY($1) AND ts >= $2 AND ts <= $3",
        &total_params,
    );
    let (page, total) = futures::try_join!(page, total).map_err(pg)?;
    // Keep only the series that appear on the page, in key order.
    let picked: Vec<(usize, Sample)> = page
        .iter()
        .map(|r| {
            let ord: i64 = r.get(0);
            let index = usize::try_from(ord - 1).unwrap_or(0);
            let sample = Sample {
                timestamp_ns: r.get(1),
                value: r.get(2),
            };
            (index, sample)
        })
        .collect();
    Ok(QueryResult::from_picked(
        picked,
        |i| series.get(i).map(|(_, k)| k.clone()),
        u64::try_from(total.get::<_, i64>(0)).unwrap_or(0),
    ))
}

/// The select list of a summary: count, sum, min, max, quantiles (one array), then one
/// cumulative count per bucket bound. Parameters start at `$first`: the quantiles
/// array (when any), then the bounds.
fn summary_columns(quantiles: usize, bounds: usize, first: usize) -> String {
    let mut cols = format!(
        "count(*) FILTER (WHERE {NOT_NAN}), sum(value) FILTER (WHERE {NOT_NAN}), \
         min(value) FILTER (WHERE {NOT_NAN}), max(value) FILTER (WHERE {NOT_NAN})"
    );
    let mut param = first;
    if quantiles > 0 {
        cols.push_str(&format!(
            ", percentile_cont(${param}::float8[]) WITHIN GROUP (ORDER BY value) FILTER (WHERE {NOT_NAN})"
        ));
        param += 1;
    }
    for _ in 0..bounds {
        cols.push_str(&format!(
            ", count(*) FILTER (WHERE value <= ${param}::float8)"
        ));
        param += 1;
    }
    cols
}

/// A [`Summary`] from the columns of [`summary_columns`] starting at `at`.
fn summary(row: &Row, at: usize, q: &AggregateQuery) -> Summary {
    let count = u64::try_from(row.get::<_, i64>(at)).unwrap_or(0);
    let sum: Option<f64> = row.get(at + 1);
    let sum = sum.unwrap_or(0.0);
    let min: Option<f64> = row.get(at + 2);
    let max: Option<f64> = row.get(at + 3);
    let mut col = at + 4;
    let quantiles = if q.quantiles.is_empty() {
        Vec::new()
    } else {
        let values: Option<Vec<Option<f64>>> = row.get(col);
        col += 1;
        q.quantiles
            .iter()
            .enumerate()
            .map(|(i, &qv)| {
                let v = values.as_ref().and_then(|v| v.get(i).copied().flatten());
                (qv, if count == 0 { None } else { v })
            })
            .collect()
    };
    let buckets = q
        .buckets
        .iter()
        .enumerate()
        .map(|(i, &le)| (le, u64::try_from(row.get::<_, i64>(col + i)).unwrap_or(0)))
        .collect();
    Summary {
        count,
        sum,
        mean: (count > 0).then(|| sum / count as f64),
        min: if count > 0 { min } else { None },
        max: if count > 0 { max } else { None },
        quantiles,
        buckets,
    }
}

/// A sum beyond the range of `double precision` (PostgreSQL raises 22003 where the
/// embedded store would answer ±inf) is a clear client error, not a server failure.
fn overflow_or(
    other: impl Fn(tokio_postgres::Error) -> Error,
) -> impl Fn(tokio_postgres::Error) -> Error {
    move |e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::NUMERIC_VALUE_OUT_OF_RANGE) {
            Error::Invalid("the sum of the selected samples overflows a 64-bit float".into())
        } else {
            other(e)
        }
    }
}

/// Aggregates; steps aligned to multiples of the step, empty steps left out.
pub(super) async fn aggregate(inner: &Inner, q: &AggregateQuery) -> Result<AggregateResult> {
    if let Some(step) = q.step_ns.filter(|s| *s <= 0) {
        return Err(Error::Invalid(format!("step {step} ns must be positive")));
    }
    // Validates quantiles and bounds exactly as every backend does.
    Aggregate::new(&q.quantiles, &q.buckets)?;
    let client = inner.client().await?;
    let series = select(inner, &client, &q.selector).await?;
    let ids: Vec<i64> = series.iter().map(|(id, _)| *id).collect();
    let (lo, hi) = bounds(&q.range);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ids, &lo, &hi];
    if !q.quantiles.is_empty() {
        params.push(&q.quantiles);
    }
    for b in &q.buckets {
        params.push(b);
    }
    let cols = summary_columns(q.quantiles.len(), q.buckets.len(), 4);
    let filter = "series_id = ANY($1) AND ts >= $2 AND ts <= $3";
    let pg = |e| pg_error(&inner.target, e);
    let total_sql = format!("SELECT {cols} FROM dn_samples WHERE {filter}");
    let total = client.query_one(&total_sql, &params);
    let range_params: [&(dyn ToSql + Sync); 3] = [&ids, &lo, &hi];
    let counted = client.query_one(
        "SELECT count(*) FROM unnest($1::bigint[]) AS k(id) WHERE EXISTS \
         (SELECT 1 FROM dn_samples p WHERE p.series_id = k.id AND p.ts >= $2 AND p.ts <= $3)",
        &range_params,
    );
    let (total, counted) = futures::try_join!(total, counted).map_err(overflow_or(pg))?;
    let steps = match q.step_ns {
        None => Vec::new(),
        Some(step) => {
            let step_param = params.len() + 1;
            // Floor division without overflow at either end of the bigint range.
            let sql = format!(
                "SELECT CASE WHEN ts >= 0 THEN ts / ${step_param} \
                        ELSE -((-(ts + 1)) / ${step_param}) - 1 END AS bucket, {cols} \
                 FROM dn_samples WHERE {filter} \
                 GROUP BY 1 HAVING count(*) FILTER (WHERE {NOT_NAN}) > 0 ORDER BY 1"
            );
            let mut with_step = params.clone();
            with_step.push(&step);
            let rows = client
                .query(&sql, &with_step)
                .await
                .map_err(overflow_or(pg))?;
            rows.iter()
                .map(|r| {
                    let bucket: i64 = r.get(0);
                    (bucket.saturating_mul(step), summary(r, 1, q))
                })
                .collect()
        }
    };
    Ok(AggregateResult {
        total: summary(&total, 0, q),
        steps,
        series_count: u64::try_from(counted.get::<_, i64>(0)).unwrap_or(0),
    })
}

/// Events oldest first (ties by id), paged, with the total.
pub(super) async fn events(inner: &Inner, q: &EventQuery) -> Result<EventPage> {
    let client = inner.client().await?;
    let (lo, hi) = bounds(&q.range);
    let (limit, offset) = (sql_count(q.limit), sql_count(q.offset));
    let source = q.source_id.as_deref().map(pg_text);
    let source = source.as_deref();
    let (filter, params): (&str, Vec<&(dyn ToSql + Sync)>) = match &source {
        Some(s) => (
            "source_id = $3 AND ts >= $1 AND ts <= $2",
            vec![&lo, &hi, s],
        ),
        None => ("ts >= $1 AND ts <= $2", vec![&lo, &hi]),
    };
    let count_sql = format!("SELECT count(*) FROM dn_events WHERE {filter}");
    let n = params.len();
    let page_sql = format!(
        "SELECT id, source_id, ts, payload::text FROM dn_events WHERE {filter} \
         ORDER BY ts, id LIMIT ${} OFFSET ${}",
        n + 1,
        n + 2
    );
    let total = client.query_one(&count_sql, &params);
    let mut page_params = params.clone();
    page_params.push(&limit);
    page_params.push(&offset);
    let page = client.query(&page_sql, &page_params);
    let (total, page) = futures::try_join!(total, page).map_err(|e| pg_error(&inner.target, e))?;
    let events = page
        .iter()
        .map(|r| {
            let payload: &str = r.get(3);
            let payload: Map<String, Value> = serde_json::from_str(payload)
                .map_err(|e| Error::Internal(format!("bad payload in dn_events: {e}")))?;
            Ok(StoredEvent {
                id: r.get(0),
                source_id: r.get(1),
                timestamp_ns: r.get(2),
                payload,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EventPage {
        total: u64::try_from(total.get::<_, i64>(0)).unwrap_or(0),
        events,
    })
}

/// A client's newest results above a seq, by the primary key (client_id, seq): the
/// rows returned are the rows read; the total is counted from the index.
pub(super) async fn results(inner: &Inner, q: &ResultQuery) -> Result<ResultPage> {
    let client = inner.client().await?;
    let id = pg_text(&q.client_id);
    let id: &str = &id;
    let after = i64::try_from(q.after_seq).unwrap_or(i64::MAX);
    let limit = sql_count(q.limit);
    let page_params: [&(dyn ToSql + Sync); 3] = [&id, &after, &limit];
    let total_params: [&(dyn ToSql + Sync); 2] = [&id, &after];
    let page = client.query(
        "SELECT client_id, seq, event_partition, event_offset, event_name, number, value, \
             error, received_ns, processed_ns, processor_id \
         FROM dn_results WHERE client_id = $1 AND seq > $2 ORDER BY seq DESC LIMIT $3",
        &page_params,
    );
    let total = client.query_one(
        "SELECT count(*) FROM dn_results WHERE client_id = $1 AND seq > $2",
        &total_params,
    );
    let (page, total) = futures::try_join!(page, total).map_err(|e| pg_error(&inner.target, e))?;
    let results: Vec<StoredResult> = page
        .iter()
        .rev()
        .map(|r| {
            let value: Option<i32> = r.get(6);
            let error: Option<String> = r.get(7);
            StoredResult {
                client_id: r.get(0),
                seq: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                event_partition: u32::try_from(r.get::<_, i32>(2)).unwrap_or(0),
                event_offset: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                event_name: r.get(4),
                number: r.get(5),
                outcome: match value {
                    Some(v) => Outcome::Value(v),
                    None => Outcome::Error(error.unwrap_or_default()),
                },
                received_ns: r.get(8),
                processed_ns: r.get(9),
                processor_id: r.get(10),
            }
        })
        .collect();
    Ok(ResultPage {
        rows_read: u64::try_from(results.len()).unwrap_or(u64::MAX),
        results,
        total: u64::try_from(total.get::<_, i64>(0)).unwrap_or(0),
    })
}

/// Metadata of every measurement.
async fn metas(inner: &Inner, client: &Object) -> Result<HashMap<String, Meta>> {
    let rows = client
        .query("SELECT measurement, kind, help FROM dn_measurements", &[])
        .await
        .map_err(|e| pg_error(&inner.target, e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let meta = Meta {
                kind: parse_kind(r.get(1)),
                help: r.get(2),
            };
            (r.get::<_, String>(0), meta)
        })
        .collect())
}

/// Every measurement with samples: fields, label names, counts and time range.
pub(super) async fn datasets(inner: &Inner) -> Result<Vec<DatasetInfo>> {
    let client = inner.client().await?;
    let rows = client
        .query(
            "SELECT s.measurement, s.field, s.labels::text, st.n, st.lo, st.hi \
             FROM dn_series s CROSS JOIN LATERAL \
               (SELECT count(*) AS n, min(ts) AS lo, max(ts) AS hi \
                FROM dn_samples p WHERE p.series_id = s.series_id) st \
             WHERE st.n > 0",
            &[],
        )
        .await
        .map_err(|e| pg_error(&inner.target, e))?;
    let metas = metas(inner, &client).await?;
    #[derive(Default)]
    struct Acc {
        fields: BTreeSet<String>,
        labels: BTreeSet<String>,
        series: u64,
        samples: u64,
        first: Option<i64>,
        last: Option<i64>,
    }
    let mut by_name: BTreeMap<String, Acc> = BTreeMap::new();
    for r in &rows {
        let acc = by_name.entry(r.get(0)).or_default();
        acc.fields.insert(r.get(1));
        let labels = parse_labels(r.get(2))?;
        acc.labels.extend(labels.iter().map(|(k, _)| k.to_owned()));
        acc.series += 1;
        acc.samples += u64::try_from(r.get::<_, i64>(3)).unwrap_or(0);
        let (lo, hi): (i64, i64) = (r.get(4), r.get(5));
        acc.first = Some(acc.first.map_or(lo, |f| f.min(lo)));
        acc.last = Some(acc.last.map_or(hi, |l| l.max(hi)));
    }
    Ok(by_name
        .into_iter()
        .map(|(measurement, acc)| {
            let meta = metas.get(&measurement);
            DatasetInfo {
                kind: meta.map(|m| m.kind).unwrap_or_default(),
                help: meta.and_then(|m| m.help.clone()),
                fields: acc.fields.into_iter().collect(),
                label_names: acc.labels.into_iter().collect(),
                series_count: acc.series,
                sample_count: acc.samples,
                first_ns: acc.first.unwrap_or(0),
                last_ns: acc.last.unwrap_or(0),
                measurement,
            }
        })
        .collect())
}

/// The newest sample of every series, sorted by key.
pub(super) async fn latest(inner: &Inner) -> Result<Vec<Latest>> {
    let client = inner.client().await?;
    let rows = client
        .query(
            "SELECT s.measurement, s.field, s.labels::text, l.ts, l.value \
             FROM dn_series s CROSS JOIN LATERAL \
               (SELECT ts, value FROM dn_samples p WHERE p.series_id = s.series_id \
                ORDER BY ts DESC LIMIT 1) l",
            &[],
        )
        .await
        .map_err(|e| pg_error(&inner.target, e))?;
    let metas = metas(inner, &client).await?;
    let mut out = rows
        .iter()
        .map(|r| {
            let measurement: String = r.get(0);
            let meta = metas.get(&measurement);
            Ok(Latest {
                kind: meta.map(|m| m.kind).unwrap_or_default(),
                help: meta.and_then(|m| m.help.clone()),
                key: SeriesKey {
                    measurement,
                    field: r.get(1),
                    labels: parse_labels(r.get(2))?,
                },
                sample: Sample {
                    timestamp_ns: r.get(3),
                    value: r.get(4),
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}
