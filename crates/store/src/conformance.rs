//! The conformance suite every [`Store`] backend must pass.
//!
//! Compiled with the feature `conformance` (a dev-dependency of each engine crate).
//! A backend's tests invoke [`conformance_suite!`](crate::conformance_suite) with an async function returning a
//! fixture (kept alive for the test) and a fresh `Arc<dyn Store>`, and an async function
//! that reopens the same store from the fixture (restart for the embedded backend,
//! reconnect for a server). Every check uses its own measurement and source names, so
//! backends over a shared server can run them in parallel. Checks go through the
//! [`Store`] trait only.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]

use std::sync::Arc;

use datanexus_model::{FieldValue, Labels, MetricType, Point};
use serde_json::json;

use crate::{
    AggregateQuery, Error, EventQuery, Outcome, ResultPage, ResultQuery, Sample, Selector,
    SeriesQuery, Store, StoredEvent, StoredResult, TimeRange,
};

/// A base timestamp: 2023-11-14T22:13:20Z.
const T0: i64 = 1_700_000_000_000_000_000;
const SECOND: i64 = 1_000_000_000;

/// A name unique to this process and call (measurement names must be metric-legal).
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
    .unwrap()
}

pub fn point(m: &str, l: &[(&str, &str)], value: f64, ts: i64) -> Point {
    Point::sample(m, labels(l), value, ts).with_kind(MetricType::Gauge)
}

fn all(m: &str) -> SeriesQuery {
    SeriesQuery {
        selector: Selector::metric(m),
        range: TimeRange::default(),
        limit: 1_000_000,
        offset: 0,
    }
}

fn values(r: &crate::QueryResult) -> Vec<f64> {
    r.samples.iter().map(|(_, s)| s.value).collect()
}

fn agg(m: &str, quantiles: &[f64], buckets: &[f64]) -> AggregateQuery {
    AggregateQuery {
        selector: Selector::metric(m),
        range: TimeRange::default(),
        step_ns: None,
        quantiles: quantiles.to_vec(),
        buckets: buckets.to_vec(),
    }
}

fn event(id: &str, source: &str, ts: i64, n: i64) -> StoredEvent {
    StoredEvent {
        id: id.into(),
        source_id: source.into(),
        timestamp_ns: ts,
        payload: json!({"n": n}).as_object().unwrap().clone(),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

pub async fn written_points_are_visible_before_flush(s: Arc<dyn Store>) {
    let m = unique("visible");
    s.write_points(&[
        point(&m, &[("host", "a")], 1.5, T0),
        point(&m, &[("host", "a")], 2.5, T0 + SECOND),
    ])
    .await
    .unwrap();
    let r = s.query(&all(&m)).await.unwrap();
    assert_eq!(r.total, 2);
    assert_eq!(values(&r), vec![1.5, 2.5]);
    assert_eq!(r.series.len(), 1);
    assert_eq!(r.series[0].measurement, m);
    assert_eq!(r.series[0].field, "value");
    assert_eq!(r.series[0].labels, labels(&[("host", "a")]));
}

pub async fn label_matchers_select_series(s: Arc<dyn Store>) {
    let m = unique("matchers");
    let pts: Vec<Point> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .flat_map(|(i, h)| {
            let (dc, m) = (if i < 2 { "east" } else { "west" }, m.as_str());
            (0..3).map(move |k| {
                point(
                    m,
                    &[("host", h), ("dc", dc)],
                    i as f64 * 10.0 + k as f64,
                    T0 + k * SECOND,
                )
            })
        })
        .collect();
    s.write_points(&pts).await.unwrap();
    let mut q = all(&m);
    q.selector.matchers = vec![("dc".into(), "east".into())];
    let r = s.query(&q).await.unwrap();
    assert_eq!(r.total, 6);
    assert!(
        r.samples
            .iter()
            .all(|(i, _)| r.series[*i].labels.get("dc") == Some("east"))
    );
    q.selector.matchers.push(("host".into(), "b".into()));
    let r = s.query(&q).await.unwrap();
    assert_eq!(values(&r), vec![10.0, 11.0, 12.0]);
    q.selector.matchers = vec![("host".into(), "nope".into())];
    let r = s.query(&q).await.unwrap();
    assert_eq!((r.total, r.samples.len()), (0, 0));
}

pub async fn time_range_is_inclusive_at_both_ends(s: Arc<dyn Store>) {
    let m = unique("range");
    let pts: Vec<Point> = (0..10)
        .map(|i| point(&m, &[], i as f64, T0 + i * SECOND))
        .collect();
    s.write_points(&pts).await.unwrap();
    let mut q = all(&m);
    q.range = TimeRange {
        start_ns: Some(T0 + 2 * SECOND),
        end_ns: Some(T0 + 5 * SECOND),
    };
    assert_eq!(
        values(&s.query(&q).await.unwrap()),
        vec![2.0, 3.0, 4.0, 5.0]
    );
    q.range = TimeRange {
        start_ns: Some(T0 + 8 * SECOND),
        end_ns: None,
    };
    assert_eq!(values(&s.query(&q).await.unwrap()), vec![8.0, 9.0]);
    q.range = TimeRange {
        start_ns: None,
        end_ns: Some(T0),
    };
    assert_eq!(values(&s.query(&q).await.unwrap()), vec![0.0]);
    let mut a = agg(&m, &[], &[]);
    a.range = TimeRange {
        start_ns: Some(T0 + 2 * SECOND),
        end_ns: Some(T0 + 5 * SECOND),
    };
    assert_eq!(s.aggregate(&a).await.unwrap().total.count, 4);
}

pub async fn limit_and_offset_page_samples_with_total(s: Arc<dyn Store>) {
    let m = unique("paging");
    let mut pts = Vec::new();
    for i in 0..5 {
        pts.push(point(
            &m,
            &[("host", "b")],
            100.0 + i as f64,
            T0 + i * SECOND,
        ));
        pts.push(point(&m, &[("host", "a")], i as f64, T0 + i * SECOND));
    }
    s.write_points(&pts).await.unwrap();
    let mut q = all(&m);
    (q.limit, q.offset) = (3, 2);
    let r = s.query(&q).await.unwrap();
    assert_eq!(r.total, 10);
    // Ordered by (timestamp, series key): a0 b0 a1 b1 a2 …
    assert_eq!(values(&r), vec![1.0, 101.0, 2.0]);
    let hosts: Vec<&str> = r
        .samples
        .iter()
        .map(|(i, _)| r.series[*i].labels.get("host").unwrap())
        .collect();
    assert_eq!(hosts, ["a", "b", "a"]);
    q.offset = 9;
    let r = s.query(&q).await.unwrap();
    assert_eq!((r.total, values(&r)), (10, vec![104.0]));
    q.offset = 50;
    let r = s.query(&q).await.unwrap();
    assert_eq!((r.total, r.samples.len()), (10, 0));
}

pub async fn rewriting_a_sample_replaces_its_value(s: Arc<dyn Store>) {
    let m = unique("rewrite");
    let batch: Vec<Point> = (0..4)
        .map(|i| point(&m, &[], i as f64, T0 + i * SECOND))
        .collect();
    s.write_points(&batch).await.unwrap();
    s.write_points(&batch).await.unwrap();
    s.write_points(&[point(&m, &[], 42.0, T0 + SECOND)])
        .await
        .unwrap();
    let r = s.query(&all(&m)).await.unwrap();
    assert_eq!(r.total, 4);
    assert_eq!(values(&r), vec![0.0, 42.0, 2.0, 3.0]);
    assert_eq!(
        s.aggregate(&agg(&m, &[], &[])).await.unwrap().total.count,
        4
    );
}

pub async fn flushed_data_survives_reopen(s: Arc<dyn Store>) -> (String, String) {
    let m = unique("durable");
    let src = unique("src");
    let mut p = point(&m, &[("host", "a")], 7.0, T0);
    p.kind = MetricType::Counter;
    p.help = Some("requests served".into());
    s.write_points(&[p, point(&m, &[("host", "a")], 8.0, T0 + SECOND)])
        .await
        .unwrap();
    s.write_points(&[point(&m, &[("host", "b")], 9.0, T0)])
        .await
        .unwrap();
    s.write_events(&[event(&format!("{src}-1"), &src, T0, 1)])
        .await
        .unwrap();
    s.write_results(&[result(&src, 5, Outcome::Value(25))])
        .await
        .unwrap();
    s.flush().await.unwrap();
    (m, src)
}

pub async fn flushed_data_survives_reopen_check(s: Arc<dyn Store>, (m, src): (String, String)) {
    let r = s.query(&all(&m)).await.unwrap();
    assert_eq!(r.total, 3);
    assert_eq!(values(&r), vec![7.0, 9.0, 8.0]);
    let ds = s.datasets().await.unwrap();
    let d = ds
        .iter()
        .find(|d| d.measurement == m)
        .expect("dataset after reopen");
    assert_eq!(
        (d.kind, d.help.as_deref()),
        (MetricType::Gauge, Some("requests served"))
    );
    assert_eq!((d.series_count, d.sample_count), (2, 3));
    let latest = s.latest().await.unwrap();
    let a = latest
        .iter()
        .find(|l| l.key.measurement == m && l.key.labels.get("host") == Some("a"))
        .unwrap();
    assert_eq!(
        a.sample,
        Sample {
            timestamp_ns: T0 + SECOND,
            value: 8.0
        }
    );
    let page = s
        .events(&EventQuery {
            source_id: Some(src.clone()),
            limit: 10,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.events[0].payload["n"], json!(1));
    let results = s.results(&results_of(&src, 0, 10)).await.unwrap();
    assert_eq!(results.results, vec![result(&src, 5, Outcome::Value(25))]);
}

/// A result of `client` with `seq`.
pub fn result(client: &str, seq: u64, outcome: Outcome) -> StoredResult {
    StoredResult {
        client_id: client.to_owned(),
        seq,
        event_partition: 1,
        event_offset: seq - 1,
        event_name: "square".to_owned(),
        number: i32::try_from(seq).unwrap(),
        outcome,
        received_ns: T0 + i64::try_from(seq).unwrap(),
        processed_ns: T0 + 2 * i64::try_from(seq).unwrap(),
        processor_id: "processor-1".to_owned(),
    }
}

fn results_of(client: &str, after_seq: u64, limit: usize) -> ResultQuery {
    ResultQuery {
        client_id: client.to_owned(),
        after_seq,
        limit,
    }
}

fn seqs(page: &ResultPage) -> Vec<u64> {
    page.results.iter().map(|r| r.seq).collect()
}

pub async fn results_are_read_by_client_above_a_seq_newest_kept(s: Arc<dyn Store>) {
    let (a, b) = (unique("client_a"), unique("client_b"));
    // Out of order, over a flush, with a client whose name is a prefix of another's.
    let a_results: Vec<StoredResult> = [3, 1, 2, 7]
        .iter()
        .map(|&q| result(&a, q, Outcome::Value(i32::try_from(q * q).unwrap())))
        .collect();
    s.write_results(&a_results[..2]).await.unwrap();
    s.flush().await.unwrap();
    s.write_results(&a_results[2..]).await.unwrap();
    s.write_results(&[result(&format!("{a}x"), 4, Outcome::Value(0))])
        .await
        .unwrap();
    s.write_results(&[result(&b, 5, Outcome::Error("overflow".into()))])
        .await
        .unwrap();
    let all = s.results(&results_of(&a, 0, 100)).await.unwrap();
    assert_eq!((seqs(&all), all.total), (vec![1, 2, 3, 7], 4));
    assert_eq!(all.results[0], result(&a, 1, Outcome::Value(1)));
    let above = s.results(&results_of(&a, 2, 100)).await.unwrap();
    assert_eq!((seqs(&above), above.total), (vec![3, 7], 2));
    // The newest `limit`, still in seq order; the total counts the others too.
    let newest = s.results(&results_of(&a, 0, 2)).await.unwrap();
    assert_eq!((seqs(&newest), newest.total), (vec![3, 7], 4));
    let none = s.results(&results_of(&a, 7, 100)).await.unwrap();
    assert_eq!((none.results.len(), none.total), (0, 0));
    let other = s.results(&results_of(&b, 0, 100)).await.unwrap();
    assert_eq!(
        other.results,
        vec![result(&b, 5, Outcome::Error("overflow".into()))]
    );
    let unknown = s
        .results(&results_of(&unique("nobody"), 0, 10))
        .await
        .unwrap();
    assert_eq!(unknown, ResultPage::default());
}

pub async fn results_are_idempotent_on_client_and_seq(s: Arc<dyn Store>) {
    let c = unique("idem_client");
    let first: Vec<StoredResult> = (1..=3).map(|q| result(&c, q, Outcome::Value(1))).collect();
    s.write_results(&first).await.unwrap();
    s.flush().await.unwrap();
    // A redelivery: the same seqs again, one with another answer (the rewrite wins).
    s.write_results(&first).await.unwrap();
    s.write_results(&[result(&c, 2, Outcome::Value(4))])
        .await
        .unwrap();
    let page = s.results(&results_of(&c, 0, 10)).await.unwrap();
    assert_eq!((seqs(&page), page.total), (vec![1, 2, 3], 3));
    assert_eq!(page.results[1].outcome, Outcome::Value(4));
    s.flush().await.unwrap();
    let page = s.results(&results_of(&c, 0, 10)).await.unwrap();
    assert_eq!((seqs(&page), page.total), (vec![1, 2, 3], 3));
    assert_eq!(page.results[1].outcome, Outcome::Value(4));
}

pub async fn duplicate_across_flushed_data_and_head_counts_once(s: Arc<dyn Store>) {
    let m = unique("dup");
    let batch: Vec<Point> = (0..5)
        .map(|i| point(&m, &[], i as f64, T0 + i * SECOND))
        .collect();
    s.write_points(&batch).await.unwrap();
    s.flush().await.unwrap();
    // A redelivered batch, one value changed, plus one new sample.
    let mut again = batch.clone();
    again[2] = point(&m, &[], 20.0, T0 + 2 * SECOND);
    again.push(point(&m, &[], 5.0, T0 + 5 * SECOND));
    s.write_points(&again).await.unwrap();
    let check = |r: crate::QueryResult| {
        assert_eq!(r.total, 6);
        assert_eq!(values(&r), vec![0.0, 1.0, 20.0, 3.0, 4.0, 5.0]);
    };
    check(s.query(&all(&m)).await.unwrap());
    let a = s.aggregate(&agg(&m, &[], &[])).await.unwrap();
    assert_eq!((a.total.count, a.total.sum), (6, 33.0));
    let ds = s.datasets().await.unwrap();
    assert_eq!(
        ds.iter().find(|d| d.measurement == m).unwrap().sample_count,
        6
    );
    s.flush().await.unwrap();
    check(s.query(&all(&m)).await.unwrap());
    let ds = s.datasets().await.unwrap();
    assert_eq!(
        ds.iter().find(|d| d.measurement == m).unwrap().sample_count,
        6
    );
}

/// Reference statistics computed independently of [`crate::aggregate`].
fn reference(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

pub async fn aggregate_matches_a_reference(s: Arc<dyn Store>) {
    let m = unique("agg");
    let mut all_values = Vec::new();
    let mut pts = Vec::new();
    for (h, host) in ["a", "b", "c"].iter().enumerate() {
        for i in 0..200i64 {
            let v = if i % 37 == 5 {
                f64::NAN
            } else {
                ((i * 7919 + h as i64 * 104_729) % 1000) as f64 / 10.0 - 20.0
            };
            all_values.push(v);
            pts.push(point(&m, &[("host", host)], v, T0 + i * SECOND));
        }
    }
    s.write_points(&pts[..300]).await.unwrap();
    s.flush().await.unwrap();
    s.write_points(&pts[300..]).await.unwrap();
    let bounds = [-10.0, 0.0, 25.0, 50.0];
    let r = s
        .aggregate(&agg(&m, &[0.5, 0.9, 0.99], &bounds))
        .await
        .unwrap();
    let finite: Vec<f64> = all_values.iter().copied().filter(|v| !v.is_nan()).collect();
    let t = &r.total;
    assert_eq!(t.count, finite.len() as u64);
    assert!(close(t.sum, finite.iter().sum()));
    assert!(close(
        t.mean.unwrap(),
        finite.iter().sum::<f64>() / finite.len() as f64
    ));
    assert_eq!(t.min, finite.iter().copied().reduce(f64::min));
    assert_eq!(t.max, finite.iter().copied().reduce(f64::max));
    for (i, q) in [0.5, 0.9, 0.99].into_iter().enumerate() {
        assert_eq!(t.quantiles[i].0, q);
        assert!(
            close(t.quantiles[i].1.unwrap(), reference(&finite, q)),
            "q{q}"
        );
    }
    let want: Vec<(f64, u64)> = bounds
        .iter()
        .map(|&b| (b, finite.iter().filter(|v| **v <= b).count() as u64))
        .collect();
    assert_eq!(t.buckets, want);
    assert_eq!(r.series_count, 3);
    // NaN samples are stored and returned.
    let raw = s.query(&all(&m)).await.unwrap();
    assert_eq!(raw.total, 600);
    assert_eq!(
        raw.samples.iter().filter(|(_, x)| x.value.is_nan()).count(),
        all_values.len() - finite.len()
    );
}

/// The unfinished aggregate finishes to the aggregate (sums within rounding: a backend
/// may sum in its own order), with steps, and parts of two halves merge to the whole.
pub async fn aggregate_parts_finish_to_the_aggregate(s: Arc<dyn Store>) {
    let m = unique("parts");
    let mut pts = Vec::new();
    for (h, host) in ["a", "b"].iter().enumerate() {
        for i in 0..150i64 {
            let v = ((i * 7919 + h as i64 * 104_729) % 1000) as f64 / 7.0 - 30.0;
            pts.push(point(&m, &[("host", host)], v, T0 + i * SECOND));
        }
    }
    s.write_points(&pts[..100]).await.unwrap();
    s.flush().await.unwrap();
    s.write_points(&pts[100..]).await.unwrap();
    let mut q = agg(&m, &[0.0, 0.5, 0.99], &[0.0, 50.0]);
    q.step_ns = Some(40 * SECOND);
    let whole = s.aggregate(&q).await.unwrap();
    let finished = s.aggregate_parts(&q).await.unwrap().finish();
    let same = |a: &crate::Summary, b: &crate::Summary| {
        assert_eq!((a.count, a.min, a.max), (b.count, b.min, b.max));
        assert!(close(a.sum, b.sum), "{} {}", a.sum, b.sum);
        assert_eq!(a.quantiles, b.quantiles);
        assert_eq!(a.buckets, b.buckets);
    };
    same(&finished.total, &whole.total);
    assert_eq!(finished.steps.len(), whole.steps.len());
    for ((ta, a), (tb, b)) in finished.steps.iter().zip(&whole.steps) {
        assert_eq!(ta, tb);
        same(a, b);
    }
    assert_eq!(finished.series_count, whole.series_count);
    let half = |host: &str| {
        let mut h = q.clone();
        h.selector.matchers = vec![("host".into(), host.into())];
        h
    };
    let mut merged = s.aggregate_parts(&half("a")).await.unwrap();
    merged
        .merge(s.aggregate_parts(&half("b")).await.unwrap())
        .unwrap();
    let merged = merged.finish();
    same(&merged.total, &finished.total);
    assert_eq!(
        merged.total.sum, finished.total.sum,
        "exact sums merge exactly"
    );
    assert_eq!(merged.series_count, 2);
}

/// Deleting a series up to a time keeps its later samples, other series and what is
/// written afterwards; deleting again deletes nothing.
pub async fn deleting_a_series_up_to_a_time_keeps_the_rest(s: Arc<dyn Store>) {
    let m = unique("delete");
    let mut pts = Vec::new();
    for host in ["a", "b"] {
        for i in 0..10i64 {
            pts.push(point(&m, &[("host", host)], i as f64, T0 + i * SECOND));
        }
    }
    s.write_points(&pts[..15]).await.unwrap();
    s.flush().await.unwrap();
    s.write_points(&pts[15..]).await.unwrap();
    let key = |host: &str| crate::SeriesKey {
        measurement: m.clone(),
        field: "value".into(),
        labels: labels(&[("host", host)]),
    };
    let deleted = match s.delete_series(&[(key("a"), T0 + 5 * SECOND)]).await {
        Err(Error::Invalid(why)) if why.contains("cannot delete") => return,
        other => other.unwrap(),
    };
    assert_eq!(deleted, 6);
    let mut only_a = all(&m);
    only_a.selector.matchers = vec![("host".into(), "a".into())];
    assert_eq!(
        values(&s.query(&only_a).await.unwrap()),
        [6.0, 7.0, 8.0, 9.0]
    );
    let mut only_b = all(&m);
    only_b.selector.matchers = vec![("host".into(), "b".into())];
    assert_eq!(s.query(&only_b).await.unwrap().total, 10);
    s.write_points(&[point(&m, &[("host", "a")], 42.0, T0)])
        .await
        .unwrap();
    s.flush().await.unwrap();
    assert_eq!(s.query(&only_a).await.unwrap().total, 5);
    assert_eq!(
        s.delete_series(&[(key("a"), T0 - SECOND)]).await.unwrap(),
        0
    );
    assert_eq!(
        s.delete_series(&[(key("a"), i64::MAX), (key("b"), i64::MAX)])
            .await
            .unwrap(),
        15
    );
    assert!(matches!(
        s.aggregate(&agg(&m, &[], &[])).await,
        Err(Error::NotFound(_))
            | Ok(crate::AggregateResult {
                total: crate::Summary { count: 0, .. },
                ..
            })
    ));
}

pub async fn step_buckets_are_aligned_to_the_step(s: Arc<dyn Store>) {
    let m = unique("steps");
    let step = 10 * SECOND;
    let base = T0 + 3 * SECOND; // not aligned: first bucket starts at T0
    let pts: Vec<Point> = (0..25)
        .map(|i| point(&m, &[], i as f64, base + i * SECOND))
        .collect();
    s.write_points(&pts).await.unwrap();
    let mut q = agg(&m, &[0.5], &[]);
    q.step_ns = Some(step);
    let r = s.aggregate(&q).await.unwrap();
    let starts: Vec<i64> = r.steps.iter().map(|(t, _)| *t).collect();
    assert_eq!(starts, vec![T0, T0 + step, T0 + 2 * step]);
    let counts: Vec<u64> = r.steps.iter().map(|(_, x)| x.count).collect();
    assert_eq!(counts, vec![7, 10, 8]);
    assert_eq!(r.steps[1].1.sum, (7..17).sum::<i64>() as f64);
    assert_eq!(r.steps[0].1.quantiles, vec![(0.5, Some(3.0))]);
    assert_eq!(r.total.count, 25);
    q.step_ns = Some(0);
    assert!(matches!(s.aggregate(&q).await, Err(Error::Invalid(_))));
}

pub async fn events_are_paged_oldest_first_and_filtered(s: Arc<dyn Store>) {
    let (a, b) = (unique("srca"), unique("srcb"));
    let evs: Vec<StoredEvent> = (0..10)
        .map(|i| event(&format!("{a}-{i}"), &a, T0 + (9 - i) * SECOND, i))
        .collect();
    s.write_events(&evs[..5]).await.unwrap();
    s.flush().await.unwrap();
    s.write_events(&evs[5..]).await.unwrap();
    s.write_events(&[event(&format!("{b}-0"), &b, T0, 100)])
        .await
        .unwrap();
    let q = EventQuery {
        source_id: Some(a.clone()),
        limit: 3,
        offset: 2,
        ..EventQuery::default()
    };
    let page = s.events(&q).await.unwrap();
    assert_eq!(page.total, 10);
    let ts: Vec<i64> = page.events.iter().map(|e| e.timestamp_ns).collect();
    assert_eq!(ts, vec![T0 + 2 * SECOND, T0 + 3 * SECOND, T0 + 4 * SECOND]);
    assert_eq!(page.events[0].payload["n"], json!(7));
    let q = EventQuery {
        source_id: Some(a.clone()),
        range: TimeRange {
            start_ns: Some(T0 + 8 * SECOND),
            end_ns: Some(T0 + 9 * SECOND),
        },
        limit: 10,
        offset: 0,
    };
    assert_eq!(s.events(&q).await.unwrap().total, 2);
    let q = EventQuery {
        source_id: Some(b.clone()),
        limit: 10,
        ..EventQuery::default()
    };
    let page = s.events(&q).await.unwrap();
    assert_eq!(
        (page.total, page.events[0].id.clone()),
        (1, format!("{b}-0"))
    );
}

pub async fn events_are_idempotent_on_id(s: Arc<dyn Store>) {
    let src = unique("idem");
    let evs: Vec<StoredEvent> = (0..4)
        .map(|i| event(&format!("{src}-{i}"), &src, T0 + i * SECOND, i))
        .collect();
    s.write_events(&evs).await.unwrap();
    s.write_events(&evs).await.unwrap();
    s.flush().await.unwrap();
    s.write_events(&evs[1..3]).await.unwrap();
    let q = EventQuery {
        source_id: Some(src.clone()),
        limit: 100,
        ..EventQuery::default()
    };
    let page = s.events(&q).await.unwrap();
    assert_eq!(page.total, 4);
    let ids: Vec<&str> = page.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, evs.iter().map(|e| e.id.as_str()).collect::<Vec<_>>());
    s.flush().await.unwrap();
    assert_eq!(s.events(&q).await.unwrap().total, 4);
}

pub async fn datasets_describe_measurements(s: Arc<dyn Store>) {
    let (m1, m2) = (unique("ds_a"), unique("ds_b"));
    let mut p = Point {
        measurement: m1.clone(),
        labels: labels(&[("host", "a"), ("dc", "x")]),
        fields: vec![
            ("value".into(), FieldValue::F64(1.0)),
            ("busy".into(), FieldValue::Bool(true)),
            ("count".into(), FieldValue::I64(3)),
            ("note".into(), FieldValue::Str("not a sample".into())),
        ],
        timestamp_ns: T0,
        kind: MetricType::Gauge,
        help: Some("cpu use".into()),
    };
    s.write_points(std::slice::from_ref(&p)).await.unwrap();
    p.timestamp_ns = T0 + 5 * SECOND;
    p.labels = labels(&[("host", "b"), ("rack", "r1")]);
    s.write_points(&[p]).await.unwrap();
    s.write_points(&[point(&m2, &[], 1.0, T0 - SECOND)])
        .await
        .unwrap();
    let ds: Vec<_> = s
        .datasets()
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.measurement == m1 || d.measurement == m2)
        .collect();
    assert_eq!(ds.len(), 2);
    let d = &ds[0];
    assert_eq!(d.measurement, m1);
    assert_eq!(
        (d.kind, d.help.as_deref()),
        (MetricType::Gauge, Some("cpu use"))
    );
    assert_eq!(d.fields, vec!["busy", "count", "value"]);
    assert_eq!(d.label_names, vec!["dc", "host", "rack"]);
    assert_eq!((d.series_count, d.sample_count), (6, 6));
    assert_eq!((d.first_ns, d.last_ns), (T0, T0 + 5 * SECOND));
    assert_eq!(
        (
            ds[1].measurement.as_str(),
            ds[1].series_count,
            ds[1].first_ns
        ),
        (m2.as_str(), 1, T0 - SECOND)
    );
    let mut q = all(&m1);
    q.selector.field = "busy".into();
    assert_eq!(values(&s.query(&q).await.unwrap()), vec![1.0, 1.0]);
}

pub async fn latest_returns_the_newest_sample_per_series(s: Arc<dyn Store>) {
    let m = unique("latest");
    s.write_points(&[
        point(&m, &[("host", "b")], 1.0, T0),
        point(&m, &[("host", "b")], 2.0, T0 + 2 * SECOND),
    ])
    .await
    .unwrap();
    s.write_points(&[point(&m, &[("host", "a")], 5.0, T0 + SECOND)])
        .await
        .unwrap();
    s.flush().await.unwrap();
    // An older sample written later does not become the latest; a rewrite of the latest does.
    s.write_points(&[
        point(&m, &[("host", "b")], 9.0, T0 + SECOND),
        point(&m, &[("host", "a")], 6.0, T0 + SECOND),
    ])
    .await
    .unwrap();
    let l: Vec<_> = s
        .latest()
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.key.measurement == m)
        .collect();
    let got: Vec<(&str, Sample)> = l
        .iter()
        .map(|l| (l.key.labels.get("host").unwrap(), l.sample))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "a",
                Sample {
                    timestamp_ns: T0 + SECOND,
                    value: 6.0
                }
            ),
            (
                "b",
                Sample {
                    timestamp_ns: T0 + 2 * SECOND,
                    value: 2.0
                }
            )
        ]
    );
    assert!(l.iter().all(|l| l.kind == MetricType::Gauge));
}

pub async fn unknown_measurement_is_not_found(s: Arc<dyn Store>) {
    let m = unique("never_written");
    assert!(matches!(s.query(&all(&m)).await, Err(Error::NotFound(name)) if name == m));
    assert!(matches!(
        s.aggregate(&agg(&m, &[], &[])).await,
        Err(Error::NotFound(_))
    ));
}

/// Generates one `#[tokio::test]` per conformance check for a backend.
///
/// `$open` is an async fn returning `Some((fixture, Arc<dyn Store>))`, or `None` when
/// the backend's server is missing and the test is skipped (outside CI); `$reopen` an async fn
/// taking `&fixture` and returning a new `Arc<dyn Store>` over the same data (the old
/// handle is stopped and dropped first).
#[macro_export]
macro_rules! conformance_suite {
    ($open:ident, $reopen:ident) => {
        mod conformance {
            use super::*;
            use $crate::conformance as c;

            macro_rules! check {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some((_fixture, store)) = $open().await else {
                            return;
                        };
                        c::$name(store).await;
                    }
                };
            }

            check!(written_points_are_visible_before_flush);
            check!(label_matchers_select_series);
            check!(time_range_is_inclusive_at_both_ends);
            check!(limit_and_offset_page_samples_with_total);
            check!(rewriting_a_sample_replaces_its_value);
            check!(duplicate_across_flushed_data_and_head_counts_once);
            check!(aggregate_matches_a_reference);
            check!(step_buckets_are_aligned_to_the_step);
            check!(aggregate_parts_finish_to_the_aggregate);
            check!(deleting_a_series_up_to_a_time_keeps_the_rest);
            check!(events_are_paged_oldest_first_and_filtered);
            check!(events_are_idempotent_on_id);
            check!(results_are_read_by_client_above_a_seq_newest_kept);
            check!(results_are_idempotent_on_client_and_seq);
            check!(datasets_describe_measurements);
            check!(latest_returns_the_newest_sample_per_series);
            check!(unknown_measurement_is_not_found);

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn flushed_data_survives_reopen() {
                let Some((fixture, store)) = $open().await else {
                    return;
                };
                let names = c::flushed_data_survives_reopen(store.clone()).await;
                store.stop().await.unwrap();
                drop(store);
                let store = $reopen(&fixture).await;
                c::flushed_data_survives_reopen_check(store, names).await;
            }
        }
    };
}
