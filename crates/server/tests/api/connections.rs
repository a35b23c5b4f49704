//! `/db-connections/…`: registering checks the database, the registry survives a
//! restart in a private file, secrets are never answered, mistakes get 4xx.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use super::support::{app, error_of, get, options, post_json, send};

fn delete(path: &str) -> Request<Body> {
    Request::delete(path).body(Body::empty()).expect("request")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test]
async fn connections_are_registered_listed_removed_and_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("connections.json");
    let with_file = || {
        let mut o = options();
        o.connections_file = Some(file.clone());
        o
    };
    let (_d1, _b1, first) = app(with_file()).await;

    let own = r#"{"connection_id": "own", "db_type": "datanexus"}"#;
    let (status, _, json) = send(&first, post_json("/db-connections/register", own)).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    assert_eq!(json["connection_id"], "own");
    assert_eq!(json["db_type"], "datanexus");
    assert_eq!(json["has_password"], false);

    let (status, _, json) = send(&first, post_json("/db-connections/register", own)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{json}");
    assert!(error_of(&json).contains("already registered"));

    // Another process (a restart) reads the same file.
    let (_d2, _b2, second) = app(with_file()).await;
    let (status, _, json) = send(&second, get("/db-connections/list")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        json["connections"].as_array().map(Vec::len),
        Some(1),
        "{json}"
    );
    assert_eq!(json["connections"][0]["connection_id"], "own");

    let (status, _, json) = send(&second, delete("/db-connections/remove?connection_id=own")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["removed"]["connection_id"], "own");
    let (status, _, json) = send(&second, delete("/db-connections/remove?connection_id=own")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    let (_, _, json) = send(&second, get("/db-connections/list")).await;
    assert_eq!(json, json!({"connections": []}));
}

#[tokio::test]
async fn unreachable_databases_and_bad_specs_are_client_errors_without_secrets() {
    let (_dir, _broker, app) = app(options()).await;
    let port = free_port();
    let cases = [
        // Nothing listens there: 400 naming the server and the cause.
        (
            json!({"connection_id": "pg", "db_type": "postgres",
                   "url": format!("postgres://me:hunter2@127.0.0.1:{port}/db")}),
            format!("127.0.0.1:{port}"),
        ),
        (
            json!({"connection_id": "ix", "db_type": "influx",
                   "url": format!("http://127.0.0.1:{port}"),
                   "username": "u", "password": "hunter2"}),
            format!("influxdb at http://127.0.0.1:{port}"),
        ),
        (
            json!({"connection_id": "m", "db_type": "mongo", "url": "mongodb://h"}),
            "MongoDB is not built in".to_owned(),
        ),
        (
            json!({"connection_id": "a b", "db_type": "datanexus"}),
            "invalid connection_id".to_owned(),
        ),
        (
            json!({"connection_id": "x", "db_type": "postgres", "url": "postgres://h/d", "passwd": "x"}),
            "unknown field `passwd`".to_owned(),
        ),
        (
            json!({"db_type": "postgres", "url": "postgres://h/d"}),
            "missing field `connection_id`".to_owned(),
        ),
    ];
    for (body, expected) in cases {
        let (status, _, json) = send(
            &app,
            post_json("/db-connections/register", &body.to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
        let message = error_of(&json);
        assert!(message.contains(&expected), "{body}: {message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
    let (_, _, json) = send(&app, get("/db-connections/list")).await;
    assert_eq!(json, json!({"connections": []}));

    let (status, _, json) = send(&app, delete("/db-connections/remove")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    assert!(error_of(&json).contains("connection_id"));
    let (status, _, json) = send(&app, get("/db-connections/list?x=1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
}

#[tokio::test]
async fn exports_run_over_http_from_the_own_store_and_are_downloaded() {
    use datanexus_model::{Labels, Point};
    let dir = tempfile::tempdir().unwrap();
    let mut o = options();
    o.exports = datanexus_export::ExportOptions {
        dir: Some(dir.path().join("exports")),
        divided_jobs: 5,
        ..datanexus_export::ExportOptions::default()
    };
    let (_d, backends, app) = super::support::app_with(o).await;
    let points: Vec<Point> = (0..300_i64)
        .map(|i| {
            let labels = Labels::new([("host".to_owned(), format!("h{}", i % 2))]).unwrap();
            Point::sample("load", labels, i as f64, (1_000 + i) * 1_000_000_000)
        })
        .collect();
    super::support::store_points(backends.store.as_ref(), &points).await;
    let own = r#"{"connection_id": "own", "db_type": "datanexus"}"#;
    let (status, _, json) = send(&app, post_json("/db-connections/register", own)).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");

    let body = json!({"connection_id": "own", "table": "load", "format": "csv",
                      "start": "1970-01-01T00:16:50Z", "end": 1109});
    let (status, _, json) = send(&app, post_json("/exports", &body.to_string())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    let id = json["job_id"].as_str().unwrap().to_owned();
    assert_eq!(json["chunks"], 5);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let done = loop {
        let (status, _, json) = send(&app, get(&format!("/exports/{id}"))).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        if json["state"] != "running" {
            break json;
        }
        assert!(std::time::Instant::now() < deadline, "{json}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // Seconds 1010..=1109: 100 samples.
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["rows"], 100);
    assert_eq!(done["file"], format!("/exports/{id}/file"));
    let (_, _, listed) = send(&app, get("/exports")).await;
    assert_eq!(listed["exports"][0]["job_id"], id.as_str());

    let (status, headers, csv) =
        super::support::send_text(&app, get(&format!("/exports/{id}/file"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 101);
    assert_eq!(lines[0], "time,host,field,value");
    assert!(lines.contains(&"1970-01-01T00:16:50Z,h0,value,10"), "{csv}");

    // Mistakes: 4xx naming them.
    let cases = [
        (
            json!({"connection_id": "nope", "table": "load", "format": "csv"}),
            StatusCode::NOT_FOUND,
            "nope",
        ),
        (
            json!({"connection_id": "own", "table": "absent", "format": "csv"}),
            StatusCode::NOT_FOUND,
            "absent",
        ),
        (
            json!({"connection_id": "own", "table": "load", "format": "xml"}),
            StatusCode::BAD_REQUEST,
            "xml",
        ),
        (
            json!({"connection_id": "own", "table": "load", "format": "csv", "start": 20, "end": 10}),
            StatusCode::BAD_REQUEST,
            "after end",
        ),
        (
            json!({"connection_id": "own", "table": "load", "format": "csv", "start": "yesterday"}),
            StatusCode::BAD_REQUEST,
            "invalid start",
        ),
        (
            json!({"connection_id": "own", "table": "load"}),
            StatusCode::BAD_REQUEST,
            "format",
        ),
        (
            json!({"connection_id": "own", "table": "load", "send_topic": "t"}),
            StatusCode::BAD_REQUEST,
            "kafka_brokers",
        ),
        (
            json!({"connection_id": "own", "table": "load", "kafka_brokers": "127.0.0.1:1",
                   "send_topic": "a/b"}),
            StatusCode::BAD_REQUEST,
            "a/b",
        ),
        (
            json!({"connection_id": "own", "table": "load", "kafka_brokers": "127.0.0.1:1",
                   "send_topic": "t", "format": "avro"}),
            StatusCode::BAD_REQUEST,
            "avro",
        ),
    ];
    for (body, expected, text) in cases {
        let (status, _, json) = send(&app, post_json("/exports", &body.to_string())).await;
        assert_eq!(status, expected, "{body}: {json}");
        assert!(error_of(&json).contains(text), "{body}: {json}");
    }
    // The seed's GET /data/export/: the same checks on query parameters.
    let seed_cases = [
        ("table=load&kafka_brokers=h:1&send_topic=t", "connection_id"),
        ("connection_id=own&table=load&send_topic=t", "kafka_brokers"),
        (
            "connection_id=own&table=load&kafka_brokers=h:1",
            "send_topic",
        ),
        (
            "connection_id=own&table=load&kafka_brokers=h:1&send_topic=t&format=xml",
            "xml",
        ),
        (
            "connection_id=own&table=load&kafka_brokers=h:1&send_topic=t&start=20&end=10",
            "after",
        ),
        (
            "connection_id=own&table=load&kafka_brokers=h:1&send_topic=t&bogus=1",
            "bogus",
        ),
    ];
    for (query, text) in seed_cases {
        let (status, _, json) = send(&app, get(&format!("/data/export/?{query}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {json}");
        assert!(error_of(&json).contains(text), "{query}: {json}");
    }
    let (status, _, json) = send(
        &app,
        get("/data/export/?connection_id=nope&table=load&kafka_brokers=h:1&send_topic=t"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    // Browsing the connection: its datasets, one's columns and range, rows by time.
    let (status, _, json) = send(&app, get("/datasets/list/?connection_id=own")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json, json!({"connection_id": "own", "datasets": ["load"]}));
    let (status, _, json) = send(&app, get("/datasets/detail/?connection_id=own&table=load")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["time_column"], "time");
    assert_eq!(json["first"], "1970-01-01T00:16:40Z");
    assert_eq!(
        json["columns"][0],
        json!({"name": "host", "type": "text", "role": "tag"})
    );
    let (status, _, json) = send(
        &app,
        get("/datasets/time-range/?connection_id=own&name=load"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["last"], "1970-01-01T00:21:39Z");
    let (status, _, json) = send(
        &app,
        get("/data/query-by-time/?connection_id=own&table=load&start=1010&end=1019&limit=4&offset=2"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["count"], 4);
    assert_eq!(json["next_offset"], 6);
    assert_eq!(json["rows"][0]["time"], "1970-01-01T00:16:52Z");
    assert_eq!(json["rows"][0]["value"], 12.0);
    for (query, expected) in [
        ("/data/query-by-time/?table=load", StatusCode::BAD_REQUEST),
        (
            "/data/query-by-time/?connection_id=own",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/data/query-by-time/?connection_id=own&table=load&limit=0",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/data/query-by-time/?connection_id=own&table=load&limit=10001",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/data/query-by-time/?connection_id=nope&table=load",
            StatusCode::NOT_FOUND,
        ),
        (
            "/data/query-by-time/?connection_id=own&table=absent",
            StatusCode::NOT_FOUND,
        ),
        (
            "/datasets/detail/?connection_id=own&table=absent",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, _, json) = send(&app, get(query)).await;
        assert_eq!(status, expected, "{query}: {json}");
    }

    // A job that went to Kafka has no file; one that succeeded to a file has no topic.
    assert!(done.get("topic").is_none(), "{done}");
    assert_eq!(done["target"], "file");
    let (status, _, _) = send(&app, get("/exports/exp-unknown")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(&app, delete("/exports/exp-unknown")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Cancelling a finished job keeps its state.
    let (status, _, json) = send(&app, delete(&format!("/exports/{id}"))).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["state"], "succeeded");

    // A restarted server lists the job again, with its file.
    let mut o = options();
    o.exports = datanexus_export::ExportOptions {
        dir: Some(dir.path().join("exports")),
        ..datanexus_export::ExportOptions::default()
    };
    let (_d2, _b2, restarted) = super::support::app_with(o).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let listed = loop {
        let (_, _, json) = send(&restarted, get(&format!("/exports/{id}"))).await;
        if json["state"] == "succeeded" {
            break json;
        }
        assert!(std::time::Instant::now() < deadline, "{json}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(listed["rows"], 100);
    let (status, _, again) =
        super::support::send_text(&restarted, get(&format!("/exports/{id}/file"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, csv);
}
