//! Placement, buffering and the merges, without nodes (the end-to-end tests with real
//! worker processes are the binary's `tests/control.rs`).

use super::*;
use datanexus_model::{Labels, MetricType};
use datanexus_store::Sample;

fn key(host: &str) -> SeriesKey {
    SeriesKey {
        measurement: "cpu".into(),
        field: "value".into(),
        labels: Labels::new([("host".into(), host.into())]).unwrap(),
    }
}

fn sample(ts: i64, value: f64) -> Sample {
    Sample {
        timestamp_ns: ts,
        value,
    }
}

fn options(nodes: &[&str]) -> ClusterOptions {
    ClusterOptions {
        nodes: nodes.iter().map(|s| (*s).to_owned()).collect(),
        token: None,
        timeout: Duration::from_secs(1),
    }
}

#[test]
fn node_lists_are_checked() {
    assert!(ClusterStore::new(options(&[])).is_err());
    assert!(ClusterStore::new(options(&["10.0.0.1:80"])).is_err());
    assert!(ClusterStore::new(options(&["https://a:1"])).is_err());
    assert!(ClusterStore::new(options(&["http://a:1/path"])).is_err());
    assert!(ClusterStore::new(options(&["http://a:1", "http://a:1/"])).is_err());
    let store = ClusterStore::new(options(&["http://a:1/", "http://b:2"])).unwrap();
    let urls: Vec<String> = store.nodes().iter().map(|n| n.url().to_owned()).collect();
    assert_eq!(urls, ["http://a:1", "http://b:2"]);
}

#[tokio::test]
async fn writes_are_buffered_per_owner_until_a_flush_confirms_them() {
    let store = ClusterStore::new(options(&[
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "http://127.0.0.1:3",
    ]))
    .unwrap();
    let points: Vec<Point> = (0..300)
        .map(|i| Point::sample("cpu", key(&format!("h{i}")).labels, 1.0, i))
        .collect();
    store.write_points(&points).await.unwrap();
    let status = store.status();
    assert_eq!(status.iter().map(|s| s.backlog).sum::<u64>(), 300);
    for s in &status {
        // Jump hash spreads 300 keys over 3 nodes: each gets a fair share.
        assert!((60..=140).contains(&s.backlog), "{s:?}");
        assert_eq!(s.state, "unknown");
    }
    // Nothing listens on ports 1–3: the flush fails naming the nodes and keeps it all.
    let e = store.flush().await.unwrap_err();
    assert!(matches!(e, datanexus_store::Error::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("http://127.0.0.1:1"), "{e}");
    let status = store.status();
    assert_eq!(status.iter().map(|s| s.backlog).sum::<u64>(), 300);
    assert!(
        status
            .iter()
            .all(|s| s.state == "down" && s.last_error.is_some())
    );
    // The same key always lands on the same node.
    let again = ClusterStore::new(options(&[
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "http://127.0.0.1:3",
    ]))
    .unwrap();
    again.write_points(&points).await.unwrap();
    let backlog = |s: &ClusterStore| s.status().iter().map(|n| n.backlog).collect::<Vec<_>>();
    assert_eq!(backlog(&again), backlog(&store));
}

#[tokio::test]
async fn a_query_fails_naming_the_node_unless_partial_answers_are_accepted() {
    let store = ClusterStore::new(options(&["http://127.0.0.1:1"])).unwrap();
    let q = SeriesQuery {
        selector: datanexus_store::Selector::metric("cpu"),
        range: datanexus_store::TimeRange::default(),
        limit: 10,
        offset: 0,
    };
    let e = store.query(&q).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("node http://127.0.0.1:1 did not answer"),
        "{e}"
    );
    let (answer, missing) = scatter::allowing_partial(store.query(&q)).await;
    assert_eq!(answer.unwrap(), QueryResult::default());
    assert_eq!(missing, ["http://127.0.0.1:1"]);
}

#[test]
fn samples_merge_in_time_then_key_order_and_page_across_nodes() {
    let a = QueryResult {
        samples: vec![
            (0, sample(1, 1.0)),
            (0, sample(3, 3.0)),
            (0, sample(5, 5.0)),
        ],
        series: vec![key("b")],
        total: 3,
    };
    let b = QueryResult {
        samples: vec![
            (0, sample(2, 2.0)),
            (1, sample(3, 30.0)),
            (0, sample(4, 4.0)),
        ],
        series: vec![key("a"), key("c")],
        total: 3,
    };
    let all = merge_samples(vec![a.clone(), b.clone()], 0, 10);
    assert_eq!(all.total, 6);
    let flat: Vec<(String, i64, f64)> = all
        .samples
        .iter()
        .map(|(i, s)| {
            (
                all.series[*i].labels.get("host").unwrap().to_owned(),
                s.timestamp_ns,
                s.value,
            )
        })
        .collect();
    assert_eq!(
        flat,
        [
            ("b".into(), 1, 1.0),
            ("a".into(), 2, 2.0),
            ("b".into(), 3, 3.0),
            ("c".into(), 3, 30.0),
            ("a".into(), 4, 4.0),
            ("b".into(), 5, 5.0)
        ]
    );
    let page = merge_samples(vec![a, b], 2, 2);
    assert_eq!(page.samples.len(), 2);
    assert_eq!(page.series, [key("b"), key("c")]);
    assert_eq!(page.samples[0], (0, sample(3, 3.0)));
    assert_eq!(page.samples[1], (1, sample(3, 30.0)));
}

#[test]
fn datasets_merge_by_measurement() {
    let info = |series, first, last, fields: &[&str], kind| DatasetInfo {
        measurement: "cpu".into(),
        kind,
        help: None,
        fields: fields.iter().map(|s| (*s).to_owned()).collect(),
        label_names: vec!["host".into()],
        series_count: series,
        sample_count: series * 10,
        first_ns: first,
        last_ns: last,
    };
    let merged = merge_datasets(vec![
        vec![info(2, 5, 10, &["value"], MetricType::Gauge)],
        vec![info(3, 1, 20, &["idle", "value"], MetricType::Counter)],
    ]);
    assert_eq!(merged.len(), 1);
    let m = &merged[0];
    assert_eq!(
        (m.series_count, m.sample_count, m.first_ns, m.last_ns),
        (5, 50, 1, 20)
    );
    assert_eq!(m.fields, ["idle", "value"]);
    assert_eq!(m.kind, MetricType::Counter);
}

#[tokio::test]
async fn batches_of_nodes_that_leave_the_list_are_placed_again() {
    let store = ClusterStore::new(options(&["http://127.0.0.1:1", "http://127.0.0.1:2"])).unwrap();
    let points: Vec<Point> = (0..200)
        .map(|i| Point::sample("cpu", key(&format!("h{i}")).labels, 1.0, i))
        .collect();
    store.write_points(&points).await.unwrap();
    let before: u64 = store.status().iter().map(|s| s.backlog).sum();
    assert_eq!(before, 200);
    // Node 2 leaves, node 3 comes: everything is owed to 1 and 3 now, nothing lost.
    store
        .set_nodes(&[
            "http://127.0.0.1:1".to_owned(),
            "http://127.0.0.1:3".to_owned(),
        ])
        .unwrap();
    let status = store.status();
    assert_eq!(status.len(), 2, "{status:?}");
    assert_eq!(status.iter().map(|s| s.backlog).sum::<u64>(), 200);
    let on_first = status[0].backlog;
    // Node 1 keeps what it had and gets nothing of node 2's (placement among two nodes
    // is the same for the first one).
    assert!(on_first > 0 && on_first < 200, "{status:?}");
}

#[test]
fn a_batch_is_split_before_it_passes_the_size_limit() {
    let node = Arc::new(Node::new("http://a:1".to_owned()));
    let mut pending = Pending {
        node,
        batches: Vec::new(),
    };
    let big = Point::sample("cpu", key(&"x".repeat(3 << 20)).labels, 1.0, 1);
    for _ in 0..5 {
        pending.push(&Item::point(&big));
    }
    // 3 MiB records, 8 MiB batches: two per batch.
    assert_eq!(pending.batches.len(), 3);
    assert!(pending.batches.iter().all(|b| b.len() <= MAX_BATCH_BYTES));
    assert_eq!(pending.records(), 5);
    let huge = Point::sample("cpu", key(&"y".repeat(9 << 20)).labels, 1.0, 1);
    pending.push(&Item::point(&huge));
    assert_eq!(
        pending.batches.len(),
        4,
        "a record over the limit is a batch of its own"
    );
}

#[tokio::test]
async fn results_are_visible_to_a_replay_before_their_node_confirmed_them() {
    // Nothing listens on port 1: writes stay unconfirmed, replays still find them (the
    // node's own answer is missing, so the replay is asked for a partial answer).
    let store = ClusterStore::new(options(&["http://127.0.0.1:1"])).unwrap();
    let result = |seq| StoredResult {
        client_id: "c".into(),
        seq,
        event_partition: 0,
        event_offset: seq - 1,
        event_name: "sq".into(),
        number: 2,
        outcome: datanexus_store::Outcome::Value(4),
        received_ns: 1,
        processed_ns: 2,
        processor_id: "p".into(),
    };
    store
        .write_results(&[result(1), result(2), result(3)])
        .await
        .unwrap();
    let q = ResultQuery {
        client_id: "c".into(),
        after_seq: 1,
        limit: 10,
    };
    let (page, missing) = scatter::allowing_partial(store.results(&q)).await;
    let page = page.unwrap();
    assert_eq!(missing, ["http://127.0.0.1:1"]);
    assert_eq!(
        page.results.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(page.total, 2);
    // A failed flush keeps them listed.
    assert!(store.flush().await.is_err());
    let (page, _) = scatter::allowing_partial(store.results(&q)).await;
    assert_eq!(page.unwrap().results.len(), 2);
}
