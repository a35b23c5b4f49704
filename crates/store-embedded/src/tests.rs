//! Tests of the embedded backend beyond the conformance suite.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use super::*;
use datanexus_store::conformance::{labels, point};
use datanexus_store::{AggregateQuery, Selector, SeriesQuery, TimeRange};

struct Fixture {
    dir: tempfile::TempDir,
}

fn small_options() -> EmbeddedStoreOptions {
    EmbeddedStoreOptions {
        row_group_rows: 256,
        ..EmbeddedStoreOptions::default()
    }
}

async fn open() -> Option<(Fixture, Arc<dyn Store>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path(), small_options()).expect("open");
    Some((Fixture { dir }, Arc::new(store)))
}

async fn reopen(f: &Fixture) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(f.dir.path(), small_options()).expect("reopen"))
}

datanexus_store::conformance_suite!(open, reopen);

const T0: i64 = 1_700_000_000_000_000_000;
const SECOND: i64 = 1_000_000_000;

fn all(m: &str) -> SeriesQuery {
    SeriesQuery {
        selector: Selector::metric(m),
        range: TimeRange::default(),
        limit: usize::MAX,
        offset: 0,
    }
}

fn full_agg(m: &str) -> AggregateQuery {
    AggregateQuery {
        selector: Selector::metric(m),
        range: TimeRange::default(),
        step_ns: Some(60 * SECOND),
        quantiles: vec![0.5, 0.99],
        buckets: vec![0.0, 50.0],
    }
}

/// `series` series × `n` samples one second apart from `start`, values `base + i`.
fn grid(m: &str, series: usize, n: i64, start: i64, base: f64) -> Vec<Point> {
    (0..series)
        .flat_map(|s| {
            let host = format!("h{s}");
            (0..n).map(move |i| {
                point(
                    m,
                    &[("host", &host)],
                    base + i as f64 + s as f64 * 0.5,
                    start + i * SECOND,
                )
            })
        })
        .collect()
}

fn now_ns() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

#[tokio::test]
async fn compaction_removes_duplicates_and_keeps_results_identical() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedStoreOptions {
        compact_min_files: 100,
        ..small_options()
    };
    let store = EmbeddedStore::open(dir.path(), opts.clone()).unwrap();
    for round in 0..4 {
        // Each round rewrites the previous round's tail (a redelivery) and adds new data.
        store
            .write_points(&grid("cpu", 5, 50, T0 + round * 30 * SECOND, round as f64))
            .await
            .unwrap();
        store.flush().await.unwrap();
    }
    assert_eq!(store.files().len(), 4);
    let before = (
        store.query(&all("cpu")).await.unwrap(),
        store.aggregate(&full_agg("cpu")).await.unwrap(),
    );
    assert_eq!(before.0.total, 5 * 140);
    store.compact().await.unwrap();
    let files = store.files();
    assert_eq!(files.len(), 1);
    let after = (
        store.query(&all("cpu")).await.unwrap(),
        store.aggregate(&full_agg("cpu")).await.unwrap(),
    );
    assert_eq!(before, after);
    assert_eq!(
        store.inner.state.read().points[0].rows,
        5 * 140,
        "duplicates are gone from the file"
    );
    assert_eq!(store.datasets().await.unwrap()[0].sample_count, 5 * 140);
    drop(store);
    let store = EmbeddedStore::open(dir.path(), opts).unwrap();
    assert_eq!(store.query(&all("cpu")).await.unwrap(), after.0);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "old files are deleted: {:?}",
        std::fs::read_dir(dir.path()).unwrap().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn flush_compacts_small_files_beyond_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedStoreOptions {
        compact_min_files: 2,
        ..small_options()
    };
    let store = EmbeddedStore::open(dir.path(), opts).unwrap();
    for round in 0..7 {
        store
            .write_points(&grid("mem", 3, 10, T0 + round * 10 * SECOND, 0.0))
            .await
            .unwrap();
        store
            .write_events(&[datanexus_store::StoredEvent {
                id: format!("e{round}"),
                source_id: "s".into(),
                timestamp_ns: T0,
                payload: Default::default(),
            }])
            .await
            .unwrap();
        store.flush().await.unwrap();
        assert!(store.files().len() <= 6, "files: {:?}", store.files());
    }
    assert_eq!(store.query(&all("mem")).await.unwrap().total, 3 * 70);
    let page = store
        .events(&datanexus_store::EventQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 7);
}

#[tokio::test]
async fn retention_drops_old_data_only() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedStoreOptions {
        retention_max_age: Some(Duration::from_secs(86_400)),
        compact_min_files: 100,
        ..small_options()
    };
    let store = EmbeddedStore::open(dir.path(), opts.clone()).unwrap();
    let old = now_ns() - 10 * 86_400 * SECOND;
    let recent = now_ns() - 60 * SECOND;
    store
        .write_points(&grid("old_only", 2, 5, old, 0.0))
        .await
        .unwrap();
    store
        .write_points(&grid("mixed", 1, 5, old, 0.0))
        .await
        .unwrap();
    store.flush().await.unwrap();
    store
        .write_points(&grid("mixed", 1, 5, recent, 100.0))
        .await
        .unwrap();
    store
        .write_points(&grid("fresh", 1, 3, recent, 0.0))
        .await
        .unwrap();
    store.flush().await.unwrap();
    // One more mixed file: old and recent rows together.
    store
        .write_points(&grid("mixed", 1, 2, old + 100 * SECOND, 50.0))
        .await
        .unwrap();
    store
        .write_points(&grid("mixed", 1, 2, recent + 100 * SECOND, 200.0))
        .await
        .unwrap();
    store
        .write_events(&[datanexus_store::StoredEvent {
            id: "old".into(),
            source_id: "s".into(),
            timestamp_ns: old,
            payload: Default::default(),
        }])
        .await
        .unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.files().len(), 4);
    store.enforce_retention().await.unwrap();
    assert_eq!(
        store.files().len(),
        2,
        "the wholly old points file and the old events file are dropped"
    );
    assert!(matches!(
        store.query(&all("old_only")).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(store.query(&all("fresh")).await.unwrap().total, 3);
    // Partially old files lose their old rows at compaction.
    store.compact().await.unwrap();
    let mixed = store.query(&all("mixed")).await.unwrap();
    assert_eq!(mixed.total, 7);
    assert!(mixed.samples.iter().all(|(_, s)| s.timestamp_ns >= recent));
    let names: Vec<String> = store
        .datasets()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.measurement)
        .collect();
    assert_eq!(names, ["fresh", "mixed"]);
    drop(store);
    let store = EmbeddedStore::open(dir.path(), opts).unwrap();
    assert_eq!(store.query(&all("mixed")).await.unwrap(), mixed);
}

#[tokio::test]
async fn crash_leftover_files_are_ignored_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    store
        .write_points(&grid("disk", 2, 10, T0, 0.0))
        .await
        .unwrap();
    store.flush().await.unwrap();
    let live = store.files();
    drop(store);
    // A complete file whose manifest was never written, and a torn one.
    let leftover = dir.path().join(manifest::points_name(999));
    std::fs::copy(&live[0], &leftover).unwrap();
    std::fs::write(dir.path().join(manifest::points_name(1000)), b"PAR1 torn").unwrap();
    std::fs::write(dir.path().join("manifest.json.tmp"), b"{").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not ours").unwrap();
    let store = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    assert_eq!(store.query(&all("disk")).await.unwrap().total, 20);
    assert_eq!(store.files(), live);
    assert!(!leftover.exists());
    assert!(!dir.path().join("manifest.json.tmp").exists());
    assert!(
        dir.path().join("notes.txt").exists(),
        "files that are not the store's are left alone"
    );
}

#[tokio::test]
async fn corrupt_manifest_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("manifest.json"),
        b"{\"version\": 1, \"next_seq\": ",
    )
    .unwrap();
    let err = EmbeddedStore::open(dir.path(), small_options()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("manifest.json"), "{err}");
    std::fs::write(dir.path().join("manifest.json"), br#"{"version":1,"next_seq":5,"points":[{"seq":2,"rows":1,"bytes":1}],"events":[],"measurements":{}}"#).unwrap();
    let err = EmbeddedStore::open(dir.path(), small_options()).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[tokio::test]
async fn row_group_statistics_prune_series_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(
        dir.path(),
        EmbeddedStoreOptions {
            row_group_rows: 100,
            ..small_options()
        },
    )
    .unwrap();
    store
        .write_points(&grid("net", 20, 100, T0, 0.0))
        .await
        .unwrap();
    store.flush().await.unwrap();
    let file = Arc::clone(&store.inner.state.read().points[0]);
    assert_eq!(file.row_group_count(), 20);
    let id = SeriesKey {
        measurement: "net".into(),
        field: "value".into(),
        labels: labels(&[("host", "h7")]),
    }
    .id();
    let one = points_file::SeriesFilter::ids([id]);
    assert!(file.row_groups_for(&one, &TimeRange::default()).len() <= 2);
    let late = TimeRange {
        start_ns: Some(T0 + 1_000 * SECOND),
        end_ns: None,
    };
    assert!(
        file.row_groups_for(&points_file::SeriesFilter::All, &late)
            .is_empty()
    );
    let mut q = all("net");
    q.selector.matchers = vec![("host".into(), "h7".into())];
    assert_eq!(store.query(&q).await.unwrap().total, 100);
}

#[tokio::test]
async fn reopen_rebuilds_statistics_when_files_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    store
        .write_points(&grid("io", 2, 10, T0, 0.0))
        .await
        .unwrap();
    store.flush().await.unwrap();
    store
        .write_points(&grid("io", 2, 5, T0 + 8 * SECOND, 100.0))
        .await
        .unwrap();
    store.flush().await.unwrap();
    drop(store);
    let store = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    let d = &store.datasets().await.unwrap()[0];
    assert_eq!((d.series_count, d.sample_count), (2, 26));
    let latest = store.latest().await.unwrap();
    assert_eq!(
        latest[0].sample,
        datanexus_store::Sample {
            timestamp_ns: T0 + 12 * SECOND,
            value: 104.0
        }
    );
    assert_eq!(store.query(&all("io")).await.unwrap().total, 26);
}

#[tokio::test]
async fn failed_flush_keeps_data_in_the_head() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let store = EmbeddedStore::open(&dir, small_options()).unwrap();
    store
        .write_points(&grid("keep", 2, 5, T0, 0.0))
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(store.flush().await.is_err(), "the store directory is gone");
    store
        .write_points(&grid("keep", 1, 1, T0 + 5 * SECOND, 9.0))
        .await
        .unwrap();
    assert_eq!(store.query(&all("keep")).await.unwrap().total, 11);
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(store.flush().await.unwrap().rows, 11);
    drop(store);
    let store = EmbeddedStore::open(&dir, small_options()).unwrap();
    assert_eq!(store.query(&all("keep")).await.unwrap().total, 11);
}

#[tokio::test]
async fn writes_after_stop_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    store.write_points(&grid("x", 1, 3, T0, 0.0)).await.unwrap();
    store.ready().await.unwrap();
    store.stop().await.unwrap();
    assert!(
        matches!(store.ready().await, Err(Error::Closed)),
        "not ready once stopped"
    );
    assert_eq!(store.files().len(), 1, "stop flushes");
    assert!(matches!(
        store.write_points(&grid("x", 1, 1, T0, 0.0)).await,
        Err(Error::Closed)
    ));
}

/// Whether pyarrow can be imported; under CI its absence is a failure.
fn pyarrow_available() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import pyarrow"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var_os("CI").is_some() {
        panic!(
            "python3 cannot import pyarrow: .ci/run installs it (python3 -m pip install pyarrow)"
        );
    }
    ok
}

fn pyarrow_rows(files: &[std::path::PathBuf], script: &str) -> String {
    let args: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn parquet_files_are_readable_by_pyarrow() {
    if !pyarrow_available() {
        eprintln!("skipping: python3 cannot import pyarrow (set CI to make this a failure)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    store
        .write_points(&grid("py", 4, 300, T0, 0.5))
        .await
        .unwrap();
    let ev = datanexus_store::StoredEvent {
        id: "e1".into(),
        source_id: "s".into(),
        timestamp_ns: T0,
        payload: serde_json::json!({"t": 1.5}).as_object().unwrap().clone(),
    };
    store.write_events(&[ev]).await.unwrap();
    let report = store.flush().await.unwrap();
    assert_eq!(report.rows, 1201);
    let script = r#"
import sys, json, pyarrow.parquet as pq
total = 0
for path in sys.argv[1:]:
    t = pq.read_table(path)
    total += t.num_rows
    if "series_id" in t.column_names:
        assert str(t.schema.field("series_id").type) == "uint64", t.schema
        assert str(t.schema.field("timestamp_ns").type).startswith("timestamp[ns"), t.schema
        labels = json.loads(t.column("labels")[0].as_py())
        assert set(labels) == {"host"}, labels
        ts = t.column("timestamp_ns").cast("int64").to_pylist()
        ids = t.column("series_id").to_pylist()
        assert list(zip(ids, ts)) == sorted(zip(ids, ts))
    else:
        assert json.loads(t.column("payload")[0].as_py()) == {"t": 1.5}
print(total)
"#;
    assert_eq!(pyarrow_rows(&store.files(), script), "1201");
}

fn replay(client: &str, after_seq: u64, limit: usize) -> datanexus_store::ResultQuery {
    datanexus_store::ResultQuery {
        client_id: client.to_owned(),
        after_seq,
        limit,
    }
}

/// The replay index: whatever a client's history, a replay reads the rows it returns
/// and no others (counted by the store), from files and the head alike, before and
/// after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_reads_only_the_results_it_returns_whatever_the_history() {
    use datanexus_store::Outcome;
    use datanexus_store::conformance::result;
    const N: u64 = 1_000_000;
    const CHUNK: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedStoreOptions::default()).unwrap();
    for chunk in 0..N / CHUNK {
        let batch: Vec<StoredResult> = (chunk * CHUNK + 1..=(chunk + 1) * CHUNK)
            .map(|seq| result("busy", seq, Outcome::Value(7)))
            .collect();
        store.write_results(&batch).await.unwrap();
        store.flush().await.unwrap();
    }
    let quiet: Vec<StoredResult> = (1..=10)
        .map(|seq| result("quiet", seq, Outcome::Value(1)))
        .collect();
    store.write_results(&quiet).await.unwrap();
    store.flush().await.unwrap();
    // Two newer copies in the head: they win over the files' and are not read there.
    store
        .write_results(&[
            result("busy", N, Outcome::Value(8)),
            result("busy", N + 1, Outcome::Value(9)),
        ])
        .await
        .unwrap();
    let check = |page: datanexus_store::ResultPage,
                 want: std::ops::RangeInclusive<u64>,
                 total,
                 rows_read| {
        let seqs: Vec<u64> = page.results.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, want.collect::<Vec<_>>());
        assert_eq!((page.total, page.rows_read), (total, rows_read));
    };
    // A client that acknowledged all but its last 10: 10 read (2 of them in the head).
    let page = store
        .results(&replay("busy", N - 9, 100_000))
        .await
        .unwrap();
    assert_eq!(page.results[8].outcome, Outcome::Value(8));
    check(page, N - 8..=N + 1, 10, 8);
    // A reconnect after everything: the newest 100 of 1,000,001, 98 read from files.
    let page = store.results(&replay("busy", 0, 100)).await.unwrap();
    check(page, N - 98..=N + 1, N + 1, 98);
    // A client with 10 results reads 10.
    let page = store.results(&replay("quiet", 0, 1000)).await.unwrap();
    check(page, 1..=10, 10, 10);
    store.stop().await.unwrap();
    drop(store);
    // After a restart the index is rebuilt from the files.
    let store = EmbeddedStore::open(dir.path(), EmbeddedStoreOptions::default()).unwrap();
    let page = store
        .results(&replay("busy", N - 9, 100_000))
        .await
        .unwrap();
    assert_eq!(page.results[8].outcome, Outcome::Value(8));
    check(page, N - 8..=N + 1, 10, 10);
    let page = store.results(&replay("busy", 0, 100)).await.unwrap();
    check(page, N - 98..=N + 1, N + 1, 100);
}

/// A store written by a version that kept stream results as events gets them moved to
/// a results file at its first start: replayable, and no longer listed as events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_kept_as_events_by_earlier_versions_are_moved_out_once() {
    use datanexus_store::Outcome;
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedStoreOptions::default()).unwrap();
    let legacy = |offset: u64, payload: serde_json::Value| StoredEvent {
        id: format!("result/3/{offset}"),
        source_id: "c1".into(),
        timestamp_ns: 2000 + i64::try_from(offset).unwrap(),
        payload: payload.as_object().unwrap().clone(),
    };
    store
        .write_events(&[
            legacy(41, json!({"kind": "result", "seq": 42, "event_name": "square", "number": 6, "result": 36, "received_ns": 1000, "processor_id": "p1"})),
            legacy(42, json!({"kind": "result", "seq": 43, "event_name": "nope", "number": 1, "error": "unknown processor", "received_ns": 1001, "processor_id": "p1"})),
            StoredEvent {
                id: "p0-7".into(),
                source_id: "c1".into(),
                timestamp_ns: 1000,
                payload: json!({"event_name": "square", "number": 6}).as_object().unwrap().clone(),
            },
        ])
        .await
        .unwrap();
    store.stop().await.unwrap();
    drop(store);
    // Make the manifest look like an earlier version's.
    let path = dir.path().join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest.as_object_mut().unwrap().remove("results_apart");
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    for _ in 0..2 {
        let store = EmbeddedStore::open(dir.path(), EmbeddedStoreOptions::default()).unwrap();
        let page = store.results(&replay("c1", 0, 10)).await.unwrap();
        let got: Vec<(u64, Outcome, i64)> = page
            .results
            .iter()
            .map(|r| (r.seq, r.outcome.clone(), r.processed_ns))
            .collect();
        assert_eq!(
            got,
            vec![
                (42, Outcome::Value(36), 2041),
                (43, Outcome::Error("unknown processor".into()), 2042)
            ]
        );
        let events = store
            .events(&datanexus_store::EventQuery {
                source_id: Some("c1".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let ids: Vec<&str> = events.events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["p0-7"]);
        store.stop().await.unwrap();
    }
}
