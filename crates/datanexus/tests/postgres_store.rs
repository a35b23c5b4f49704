//! Data Nexus on the PostgreSQL store, as users run it: roles as separate processes on
//! Redis with `--store postgres://…`, a store killed mid-ingest, PostgreSQL stopped
//! during ingest, and bad connection settings at start. PostgreSQL is real: the
//! server of `TEST_POSTGRES_URL` (started by `.ci/run`) or a private cluster.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "common/roles.rs"]
mod roles_support;
mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datanexus_proto::data_nexus::metrics_service_client::MetricsServiceClient;
use datanexus_store_postgres::testkit::{PrivateCluster, TEST_URL_VAR, TestDatabase};
use roles_support::{Deployment, METRIC, SERIES, batch, wait_stored};
use support::{Redis, Server, http_get, http_get_json, http_post_json};

/// Short leases so that work of a killed process moves within seconds.
const WORKER_ENV: &[(&str, &str)] = &[
    ("DATANEXUS_WORKERS__LEASE_TIMEOUT", "6s"),
    ("DATANEXUS_WORKERS__SESSION_TIMEOUT", "3s"),
];

/// Runs one SQL statement returning a bigint.
async fn sql_count(url: &str, sql: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// `n` events of source `sensor-<i % 3>` through `POST /ingest`.
fn post_events(server: &Server, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let events: Vec<serde_json::Value> = chunk
            .iter()
            .map(|i| {
                serde_json::json!({
                    "sourceId": format!("sensor-{}", i % 3),
                    "timestamp": 1_700_000_000 + *i as i64,
                    "payload": {"temperature": *i as f64 / 10.0, "n": i}
                })
            })
            .collect();
        let (status, body) = http_post_json(
            server.http,
            "/ingest",
            &serde_json::Value::Array(events).to_string(),
        );
        assert_eq!(status, 202, "{body}");
    }
}

/// The answers the comparison looks at: aggregate fields and pages of `/data`.
fn answers(server: &Server) -> (serde_json::Value, Vec<serde_json::Value>) {
    let agg = http_get_json(
        server.http,
        &format!("/metrics/{METRIC}/aggregate?quantiles=0.25"),
    );
    let mut pages = Vec::new();
    for offset in [0, 40, 80] {
        let page = http_get_json(
            server.http,
            &format!("/data?source_id=sensor-1&limit=40&offset={offset}"),
        );
        // Ids are broker record ids, which differ between deployments.
        let rows: Vec<serde_json::Value> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| serde_json::json!([e["sourceId"], e["timestamp"], e["payload"]]))
            .collect();
        pages.push(serde_json::json!({"total": page["total"], "rows": rows}));
    }
    (agg, pages)
}

fn close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_on_redis_with_a_postgres_store_answer_like_the_embedded_store() {
    let Some(redis) = Redis::start() else { return };
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let d = Deployment::start(
        &["--broker", &redis.url(), "--store", db.url()],
        WORKER_ENV,
        1,
        2,
    );
    assert_eq!(
        http_get_json(d.store.http, "/ready")["store"],
        "postgres",
        "the store role runs on PostgreSQL"
    );
    // 10 nimbus clients × 1,000 sq over both gateways while 200,000 metrics arrive.
    const CLIENTS: usize = 10;
    const EVENTS: i32 = 1_000;
    let streams: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(roles_support::stream_client(
                d.gateways[i % 2].grpc_url(),
                format!("pg-client-{i}"),
                roles_support::numbers_of(i, EVENTS),
                Arc::default(),
            ))
        })
        .collect();
    let senders = roles_support::send_metrics(&d.gateways);
    post_events(&d.gateways[0], 300);
    for s in senders {
        s.await.unwrap();
    }
    for (i, s) in streams.into_iter().enumerate() {
        let seen = s.await.unwrap();
        roles_support::assert_exactly_once(
            &format!("pg-client-{i}"),
            &seen,
            roles_support::numbers_of(i, EVENTS),
        );
    }
    assert_eq!(
        wait_stored(&d.store, 200_000, Duration::from_secs(120)),
        200_000
    );
    // Counted in PostgreSQL itself, not only through our API.
    let samples = sql_count(
        db.url(),
        &format!(
            "SELECT count(*) FROM dn_samples p JOIN dn_series s USING (series_id) \
             WHERE s.measurement = '{METRIC}'"
        ),
    )
    .await;
    assert_eq!(samples, 200_000);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get_json(d.store.http, "/data?source_id=sensor-1&limit=1")["total"] != 100 {
        assert!(Instant::now() < deadline, "events not stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The same metrics and events into a single process on the embedded store.
    let dir = tempfile::tempdir().unwrap();
    let reference = Server::start(dir.path(), &[]);
    let mut c = MetricsServiceClient::connect(reference.grpc_url())
        .await
        .unwrap();
    for b in 0..200 {
        c.ingest_metrics(batch(b)).await.unwrap();
    }
    post_events(&reference, 300);
    assert_eq!(
        wait_stored(&reference, 200_000, Duration::from_secs(120)),
        200_000
    );
    while http_get_json(reference.http, "/data?source_id=sensor-1&limit=1")["total"] != 100 {
        assert!(Instant::now() < deadline, "reference events not stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (pg_agg, pg_pages) = answers(&d.store);
    let (ref_agg, ref_pages) = answers(&reference);
    for key in ["count", "sum", "min", "max", "mean", "p50", "p90", "p99"] {
        assert!(
            close(&pg_agg[key], &ref_agg[key]),
            "{key}: postgres {} vs embedded {}",
            pg_agg[key],
            ref_agg[key]
        );
    }
    assert!(close(
        &pg_agg["quantiles"]["0.25"],
        &ref_agg["quantiles"]["0.25"]
    ));
    assert_eq!(pg_pages, ref_pages, "GET /data pages");
    assert!(reference.terminate());
    d.terminate();
}

/// Sends batches one at a time until stopped; counts the acknowledged ones.
async fn ingest_until_stopped(
    url: String,
    acked: Arc<AtomicU64>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut c = MetricsServiceClient::connect(url).await.unwrap();
    let mut b = acked.load(Ordering::SeqCst);
    while !*stop.borrow() {
        match c.ingest_metrics(batch(b)).await {
            Ok(_) => {
                b += 1;
                acked.store(b, Ordering::SeqCst);
            }
            Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_killed_mid_ingest_keeps_every_acknowledged_sample_once_in_postgres() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let args = ["--store", db.url()];
    let server = Server::start(dir.path(), &args);
    let acked = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let client = tokio::spawn(ingest_until_stopped(
        server.grpc_url(),
        acked.clone(),
        stop_rx,
    ));
    // Kill once some batches were stored in PostgreSQL and more are in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (acked.load(Ordering::SeqCst) < 60 || roles_support::stored(&server) < 20_000)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    let _ = stop_tx.send(true);
    client.await.unwrap();
    let acked_batches = acked.load(Ordering::SeqCst);
    assert!(
        acked_batches >= 60,
        "only {acked_batches} batches before the kill"
    );

    let server = Server::start(dir.path(), &args);
    let want = acked_batches * SERIES;
    let n = wait_stored(&server, want, Duration::from_secs(120));
    assert!(
        n >= want,
        "{n} of {want} acknowledged samples after restart"
    );
    // Each acknowledged sample exactly once (batch b is at second T0 + b).
    let last_ts = (1_700_000_000 + acked_batches as i64 - 1) * 1_000_000_000;
    let in_acked = sql_count(
        db.url(),
        &format!("SELECT count(*) FROM dn_samples WHERE ts <= {last_ts}"),
    )
    .await;
    assert_eq!(in_acked as u64, want, "acknowledged samples in dn_samples");
    let distinct = sql_count(
        db.url(),
        &format!(
            "SELECT count(*) FROM (SELECT DISTINCT series_id, ts FROM dn_samples \
             WHERE ts <= {last_ts}) d"
        ),
    )
    .await;
    assert_eq!(distinct as u64, want);
    // Beyond that, at most (part of) the one batch in flight at the kill.
    let all = sql_count(db.url(), "SELECT count(*) FROM dn_samples").await as u64;
    assert!(
        (want..=want + SERIES).contains(&all),
        "{all} rows, {want} acknowledged"
    );
    assert!(server.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_during_ingest_is_not_ready_and_everything_lands_after() {
    let Some(cluster) = PrivateCluster::start() else {
        return;
    };
    let url = cluster.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_env(
        dir.path(),
        &["--store", &url],
        &[("DATANEXUS_STORE__CONNECT_TIMEOUT", "2s")],
    );
    let mut c = MetricsServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    for b in 0..20 {
        c.ingest_metrics(batch(b)).await.unwrap();
    }
    assert_eq!(
        wait_stored(&server, 20_000, Duration::from_secs(60)),
        20_000
    );
    cluster.stop_server();
    let (status, body) = http_get(server.http, "/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("postgresql at 127.0.0.1"), "{body}");
    // The log is the buffer: ingestion is still acknowledged.
    for b in 20..60 {
        c.ingest_metrics(batch(b)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.start_server();
    assert_eq!(
        wait_stored(&server, 60_000, Duration::from_secs(90)),
        60_000
    );
    assert_eq!(http_get(server.http, "/ready").0, 200);
    assert_eq!(
        sql_count(&url, "SELECT count(*) FROM dn_samples").await,
        60_000
    );
    assert!(server.terminate());
}

/// Runs `serve` expecting it to fail at start; returns its stderr.
fn serve_fails(store: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_datanexus"))
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--store",
            store,
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("DATANEXUS_STORE__CONNECT_TIMEOUT", "2s")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve started with store {store}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn serve_refuses_to_start_on_a_wrong_password_or_an_unreachable_server() {
    let Ok(admin) = std::env::var(TEST_URL_VAR) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{TEST_URL_VAR} unset"
        );
        return;
    };
    // The CI server authenticates TCP logins by password.
    let (scheme_user, rest) = admin.split_once('@').unwrap();
    let user = scheme_user.rsplit_once(':').map_or(scheme_user, |(u, _)| u);
    let wrong = format!("{user}:not-the-password@{rest}");
    let err = serve_fails(&wrong);
    let host = rest.split('/').next().unwrap();
    assert!(err.contains(host), "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");

    let port = support::free_port();
    let err = serve_fails(&format!("postgres://u:secret@127.0.0.1:{port}/db"));
    assert!(err.contains(&format!("127.0.0.1:{port}/db")), "{err}");
    assert!(err.to_lowercase().contains("connect"), "{err}");
    assert!(!err.contains("secret"), "{err}");
}

#[test]
fn serve_builds_the_url_from_the_seeds_postgres_variables() {
    let Ok(admin) = std::env::var(TEST_URL_VAR) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{TEST_URL_VAR} unset"
        );
        return;
    };
    // postgres://user:password@host:port/db → the seed's variables.
    let rest = admin.strip_prefix("postgres://").unwrap();
    let (auth, hostdb) = rest.split_once('@').unwrap();
    let (user, password) = auth.split_once(':').unwrap();
    let (hostport, _) = hostdb.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let db = TestDatabase::create_on(&admin);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_env(
        dir.path(),
        &["--store", "postgres"],
        &[
            ("POSTGRES_HOST", host),
            ("POSTGRES_PORT", port),
            ("POSTGRES_USER", user),
            ("POSTGRES_PASSWORD", password),
            ("POSTGRES_DB", db.name()),
        ],
    );
    let ready = http_get_json(server.http, "/ready");
    assert_eq!(ready["store"], "postgres", "{ready}");
    let (status, body) = http_post_json(
        server.http,
        "/metrics",
        r#"{"metric_name": "seed_vars", "value": 1.5}"#,
    );
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(server.http, "/metrics/seed_vars/aggregate").0 != 200 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.terminate());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let n = rt.block_on(sql_count(
        db.url(),
        "SELECT count(*) FROM dn_points WHERE measurement = 'seed_vars'",
    ));
    assert_eq!(n, 1);
}
