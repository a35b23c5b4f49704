//! Tests of the PostgreSQL backend against a real server: the conformance suite, and
//! what is PostgreSQL's own (migrations, concurrent start, partitions and retention,
//! errors naming the server).

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]

use std::time::Duration;

use super::testkit::{PrivateCluster, TestDatabase, with_database};
use super::*;
use datanexus_store::conformance::point;
use datanexus_store::{EventQuery, Selector, SeriesQuery, TimeRange};

const SECOND: i64 = 1_000_000_000;

/// A fixture owning the database.
struct Fixture {
    db: TestDatabase,
}

async fn open_url(url: &str) -> PostgresStore {
    PostgresStore::open(PostgresOptions::new(url))
        .await
        .expect("open postgres store")
}

async fn open() -> Option<(Fixture, Arc<dyn Store>)> {
    let db = TestDatabase::create()?;
    let store = open_url(db.url()).await;
    Some((Fixture { db }, Arc::new(store)))
}

async fn reopen(f: &Fixture) -> Arc<dyn Store> {
    Arc::new(open_url(f.db.url()).await)
}

datanexus_store::conformance_suite!(open, reopen);

/// Runs `sql` returning one bigint.
async fn count(url: &str, sql: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_twice_applies_each_version_once() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let first = open_url(db.url()).await;
    first.stop().await.unwrap();
    let second = open_url(db.url()).await;
    second.stop().await.unwrap();
    // One row per version: each applied once.
    assert_eq!(
        count(db.url(), "SELECT count(*) FROM dn_schema_version").await,
        i64::from(SCHEMA_VERSION)
    );
    assert_eq!(
        count(
            db.url(),
            "SELECT max(version)::bigint FROM dn_schema_version"
        )
        .await,
        i64::from(SCHEMA_VERSION)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_starting_at_once_do_not_corrupt_the_schema() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let opens = (0..6).map(|_| PostgresStore::open(PostgresOptions::new(db.url())));
    let stores = futures::future::join_all(opens).await;
    for s in &stores {
        assert!(s.is_ok(), "{:?}", s.as_ref().err());
    }
    // One row per version: each applied once.
    assert_eq!(
        count(db.url(), "SELECT count(*) FROM dn_schema_version").await,
        i64::from(SCHEMA_VERSION)
    );
    // And they all write to the same partitions without conflict.
    let writes = stores.iter().enumerate().map(|(i, s)| {
        let s = s.as_ref().unwrap();
        async move {
            let ts = now_ns() - i as i64 * 86_400 * SECOND;
            s.write_points(&[point("concurrent", &[("i", &i.to_string())], 1.0, ts)])
                .await
        }
    });
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    assert_eq!(count(db.url(), "SELECT count(*) FROM dn_samples").await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_a_newer_schema_is_refused() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    open_url(db.url()).await.stop().await.unwrap();
    testkit::execute_blocking(
        db.url(),
        "INSERT INTO dn_schema_version (version) VALUES (99)",
    )
    .unwrap();
    let err = PostgresStore::open(PostgresOptions::new(db.url()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_expired_partitions_and_old_events() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let mut options = PostgresOptions::new(db.url());
    options.retention_max_age = Some(Duration::from_secs(3 * 86_400));
    let store = PostgresStore::open(options).await.unwrap();
    let now = now_ns();
    let day = 86_400 * SECOND;
    let old = now - 10 * day;
    let yesterday_ts = (schema::day_of(now) - 1) * day + 3600 * SECOND;
    let recent = now - SECOND;
    store
        .write_points(&[
            point("ret", &[("a", "1")], 1.0, old),
            point("ret", &[("a", "1")], 1.5, yesterday_ts),
            point("ret", &[("a", "1")], 2.0, recent),
        ])
        .await
        .unwrap();
    let event = |id: &str, ts| StoredEvent {
        id: id.into(),
        source_id: "s".into(),
        timestamp_ns: ts,
        payload: serde_json::Map::new(),
    };
    store
        .write_events(&[event("old", old), event("new", now + 3600 * SECOND)])
        .await
        .unwrap();
    store.flush().await.unwrap();
    // Ten days ago is outside the window of daily partitions: the default one.
    let in_default = "SELECT count(*) FROM dn_samples_default";
    assert_eq!(count(db.url(), in_default).await, 1);
    let yesterday = schema::partition_name(schema::day_of(now) - 1);
    let partitions =
        format!("SELECT count(*) FROM pg_class WHERE relname = '{yesterday}' AND relkind = 'r'");
    assert_eq!(count(db.url(), &partitions).await, 1);
    // Three days: the old sample and event go, yesterday stays.
    store.enforce_retention().await.unwrap();
    assert_eq!(count(db.url(), in_default).await, 0);
    assert_eq!(count(db.url(), &partitions).await, 1);
    // One second: yesterday's partition is dropped whole.
    let mut options = PostgresOptions::new(db.url());
    options.retention_max_age = Some(Duration::from_secs(1));
    let strict = PostgresStore::open(options).await.unwrap();
    strict.enforce_retention().await.unwrap();
    assert_eq!(count(db.url(), &partitions).await, 0);
    let q = SeriesQuery {
        selector: Selector::metric("ret"),
        range: TimeRange::default(),
        limit: 100,
        offset: 0,
    };
    let r = store.query(&q).await.unwrap();
    assert_eq!(r.total, 1);
    assert_eq!(r.samples[0].1.value, 2.0);
    let page = store
        .events(&EventQuery {
            limit: 10,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.events[0].id, "new");
    // Today's partition and those ahead exist after retention too.
    let today = schema::partition_name(schema::day_of(now));
    assert_eq!(
        count(
            db.url(),
            &format!("SELECT count(*) FROM pg_class WHERE relname = '{today}'")
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_are_narrow_rows_readable_with_sql() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let store = open_url(db.url()).await;
    let t = 1_700_000_000 * SECOND;
    store
        .write_points(&[
            point("sqlview", &[("host", "a")], 1.5, t),
            point("sqlview", &[("host", "a")], 2.5, t + SECOND),
            // A redelivery of the same sample is not a second row.
            point("sqlview", &[("host", "a")], 2.5, t + SECOND),
        ])
        .await
        .unwrap();
    store.flush().await.unwrap();
    assert_eq!(count(db.url(), "SELECT count(*) FROM dn_samples").await, 2);
    assert_eq!(
        count(
            db.url(),
            "SELECT count(*) FROM dn_points WHERE measurement = 'sqlview' \
             AND labels->>'host' = 'a' AND time = '2023-11-14T22:13:21Z'"
        )
        .await,
        1
    );
    let id = datanexus_model::series_id(
        "sqlview",
        "value",
        &datanexus_store::conformance::labels(&[("host", "a")]),
    );
    assert_eq!(
        count(
            db.url(),
            "SELECT series_id FROM dn_series WHERE measurement = 'sqlview'"
        )
        .await,
        id as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_do_not_block_writes() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let store = open_url(db.url()).await;
    let mut payload = serde_json::Map::new();
    payload.insert("k\u{0}".into(), serde_json::json!("v\u{0}"));
    store
        .write_events(&[StoredEvent {
            id: "n\u{0}1".into(),
            source_id: "s\u{0}".into(),
            timestamp_ns: 1,
            payload,
        }])
        .await
        .unwrap();
    store
        .write_points(&[point("nul", &[("l", "a\u{0}b")], 1.0, 5)])
        .await
        .unwrap();
    let page = store
        .events(&EventQuery {
            source_id: Some("s\u{FFFD}".into()),
            limit: 10,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.events[0].payload["k\u{FFFD}"], "v\u{FFFD}");
    // A query naming a NUL is an unknown measurement, not a server error.
    let q = SeriesQuery {
        selector: Selector::metric("a\u{0}"),
        range: TimeRange::default(),
        limit: 1,
        offset: 0,
    };
    assert!(matches!(store.query(&q).await, Err(Error::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut options = PostgresOptions::new(format!("postgres://u:p@127.0.0.1:{port}/db"));
    options.connect_timeout = Duration::from_secs(2);
    let err = PostgresStore::open(options).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{port}/db")),
        "{message}"
    );
    assert!(!message.contains(":p@"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_naming_the_server_and_cause() {
    let Some(cluster) = PrivateCluster::start() else {
        return;
    };
    let url = cluster
        .url("postgres")
        .replace(testkit::PRIVATE_PASSWORD, "wrong");
    let err = PostgresStore::open(PostgresOptions::new(url))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{}", cluster.port())),
        "{message}"
    );
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
    assert!(!message.contains("wrong"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_unavailable_meanwhile_and_served_after() {
    let Some(cluster) = PrivateCluster::start() else {
        return;
    };
    let url = cluster.url("postgres");
    let mut options = PostgresOptions::new(&url);
    options.connect_timeout = Duration::from_secs(2);
    let store = PostgresStore::open(options).await.unwrap();
    store
        .write_points(&[point("restart", &[], 1.0, 1_000)])
        .await
        .unwrap();
    store.flush().await.unwrap();
    cluster.stop_server();
    let err = store.ready().await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("postgresql at 127.0.0.1"), "{err}");
    let write = store
        .write_points(&[point("restart", &[], 2.0, 2_000)])
        .await;
    assert!(matches!(write, Err(Error::Unavailable(_))), "{write:?}");
    cluster.start_server();
    // Pooled connections to the old server are replaced as they fail.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.ready().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "not ready after restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut written = store
        .write_points(&[point("restart", &[], 2.0, 2_000)])
        .await;
    while written.is_err() && std::time::Instant::now() < deadline {
        written = store
            .write_points(&[point("restart", &[], 2.0, 2_000)])
            .await;
    }
    written.unwrap();
    store.flush().await.unwrap();
    assert_eq!(
        count(
            &with_database(&url, "postgres"),
            "SELECT count(*) FROM dn_samples"
        )
        .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_of_far_days_rest_in_the_default_partition_not_a_table_per_day() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let store = open_url(db.url()).await;
    let tables = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'dn_samples'::regclass";
    let before = count(db.url(), tables).await;
    // One sample a day over ~27 years, back and forth from now, in one batch.
    let day = 86_400 * SECOND;
    let now = now_ns();
    let points: Vec<Point> = (-5_000..5_000)
        .map(|d| point("spread", &[], d as f64, now + d * day))
        .collect();
    store.write_points(&points).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(count(db.url(), tables).await, before, "no new partition");
    assert_eq!(
        count(db.url(), "SELECT count(*) FROM dn_samples").await,
        10_000
    );
    let q = SeriesQuery {
        selector: Selector::metric("spread"),
        range: TimeRange::default(),
        limit: 1,
        offset: 0,
    };
    let r = store.query(&q).await.unwrap();
    assert_eq!(r.total, 10_000);
    assert_eq!(r.samples[0].1.value, -5_000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_whose_samples_came_early_stays_in_the_default_partition() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    // Samples of the day after the window arrive first…
    let mut options = PostgresOptions::new(db.url());
    options.partitions_ahead_days = 1;
    let early = PostgresStore::open(options).await.unwrap();
    let day = 86_400 * SECOND;
    let ts = now_ns() + 2 * day;
    early
        .write_points(&[point("early", &[], 1.0, ts)])
        .await
        .unwrap();
    // …then a store keeping more days ahead opens: that day cannot get its own table,
    // and its samples are still written and read.
    let mut options = PostgresOptions::new(db.url());
    options.partitions_ahead_days = 3;
    let later = PostgresStore::open(options).await.unwrap();
    later
        .write_points(&[point("early", &[], 2.0, ts + SECOND)])
        .await
        .unwrap();
    assert_eq!(
        count(db.url(), "SELECT count(*) FROM dn_samples_default").await,
        2
    );
    let name = schema::partition_name(schema::day_of(now_ns()) + 3);
    assert_eq!(
        count(
            db.url(),
            &format!("SELECT count(*) FROM pg_class WHERE relname = '{name}'")
        )
        .await,
        1,
        "the days after it got their tables"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_split_over_connections_stay_idempotent() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let store = open_url(db.url()).await;
    let t = 1_700_000_000 * SECOND;
    let batch = |value: f64| -> Vec<Point> {
        (0..12_000)
            .map(|i| {
                point(
                    "sharded",
                    &[("s", &(i % 1000).to_string())],
                    value,
                    t + i / 1000,
                )
            })
            .collect()
    };
    store.write_points(&batch(1.0)).await.unwrap();
    // A redelivery with new values: the direct COPY conflicts and the upsert replaces.
    store.write_points(&batch(2.0)).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(
        count(db.url(), "SELECT count(*) FROM dn_samples").await,
        12_000
    );
    assert_eq!(
        count(db.url(), "SELECT count(*) FROM dn_samples WHERE value = 2").await,
        12_000
    );
    let agg = store
        .aggregate(&datanexus_store::AggregateQuery {
            selector: Selector::metric("sharded"),
            range: TimeRange::default(),
            step_ns: None,
            quantiles: vec![0.5],
            buckets: vec![],
        })
        .await
        .unwrap();
    assert_eq!(agg.total.count, 12_000);
    assert_eq!(agg.series_count, 1000);
    assert_eq!(agg.total.quantiles, vec![(0.5, Some(2.0))]);
}

/// Results that schema version 1 kept as events move to `dn_results` when the schema
/// is migrated, so a client reconnecting after the upgrade still gets them replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_kept_as_events_by_version_1_are_migrated() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    open_url(db.url()).await.stop().await.unwrap();
    // Back to version 1, with two results as version 1 wrote them.
    let (client, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            r#"DROP VIEW dn_results_v; DROP TABLE dn_results;
               DELETE FROM dn_schema_version WHERE version = 2;
               INSERT INTO dn_events (id, source_id, ts, payload) VALUES
                 ('result/3/41', 'c1', 2000, '{"kind":"result","seq":42,"event_name":"square","number":6,"result":36,"received_ns":1000,"processor_id":"p1"}'),
                 ('result/3/42', 'c1', 2001, '{"kind":"result","seq":43,"event_name":"nope","number":1,"error":"unknown processor","received_ns":1001,"processor_id":"p1"}'),
                 ('e1', 'c1', 1000, '{"event_name":"square","number":6}');"#,
        )
        .await
        .unwrap();
    let store = open_url(db.url()).await;
    let page = store
        .results(&ResultQuery {
            client_id: "c1".into(),
            after_seq: 0,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        page.results,
        vec![
            StoredResult {
                client_id: "c1".into(),
                seq: 42,
                event_partition: 3,
                event_offset: 41,
                event_name: "square".into(),
                number: 6,
                outcome: datanexus_store::Outcome::Value(36),
                received_ns: 1000,
                processed_ns: 2000,
                processor_id: "p1".into(),
            },
            StoredResult {
                client_id: "c1".into(),
                seq: 43,
                event_partition: 3,
                event_offset: 42,
                event_name: "nope".into(),
                number: 1,
                outcome: datanexus_store::Outcome::Error("unknown processor".into()),
                received_ns: 1001,
                processed_ns: 2001,
                processor_id: "p1".into(),
            },
        ]
    );
    // The event stays an event; the results are no longer events.
    let events = store
        .events(&EventQuery {
            source_id: Some("c1".into()),
            limit: 10,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = events.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["e1"]);
    store.stop().await.unwrap();
}

/// TLS to PostgreSQL with a private CA made by the test: `verify-full` checks the
/// server's certificate against `sslrootcert` and connects over TLS; a CA that did not
/// sign it is refused; `require` encrypts without checking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_against_the_root_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let Some(cluster) = PrivateCluster::start() else {
        return;
    };
    let issuer = || {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let (ca, other_ca) = (issuer(), issuer());
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    cluster.enable_tls(&cert.pem(), &key.serialize_pem());
    let dir = tempfile::tempdir().unwrap();
    let (ca_path, other_path) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&other_path, other_ca.pem()).unwrap();
    let url = |mode: &str, root: Option<&std::path::Path>| {
        let mut url = format!("{}?sslmode={mode}", cluster.url("postgres"));
        if let Some(root) = root {
            url.push_str(&format!("&sslrootcert={}", root.display()));
        }
        url
    };
    let store = PostgresStore::open(PostgresOptions::new(url("verify-full", Some(&ca_path))))
        .await
        .expect("verify-full with the right CA");
    store.ready().await.unwrap();
    // The store's connections are encrypted (seen from the server).
    let encrypted = count(
        &cluster.url("postgres"),
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE s.ssl AND a.application_name IS DISTINCT FROM 'psql'",
    )
    .await;
    assert!(encrypted >= 1, "{encrypted} TLS connections");
    store.stop().await.unwrap();
    let refused = PostgresStore::open(PostgresOptions::new(url("verify-full", Some(&other_path))))
        .await
        .expect_err("a CA that did not sign the server's certificate");
    assert!(
        refused.to_string().to_lowercase().contains("certificate"),
        "{refused}"
    );
    let store = PostgresStore::open(PostgresOptions::new(url("require", None)))
        .await
        .expect("require encrypts without checking");
    store.ready().await.unwrap();
    store.stop().await.unwrap();
}
