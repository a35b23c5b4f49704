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
