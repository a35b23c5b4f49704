//! An export job survives a SIGKILL of its server: the restarted server lists it and
//! resumes it from its complete chunks, and the file holds every row of the table
//! exactly once.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::{Duration, Instant};

use datanexus_store_postgres::testkit::{TestDatabase, execute_blocking};
use support::{Server, http_get_json, http_post_json};

const ROWS: i64 = 1_000_000;

/// Small chunks read one at a time, so that the job is mid-way for a while.
const JOBS_ENV: &[(&str, &str)] = &[
    ("DATANEXUS_JOBS__DIVIDED_JOBS", "200"),
    ("DATANEXUS_JOBS__WORKER_NUM", "1"),
];

#[test]
fn a_job_cut_by_sigkill_resumes_after_the_restart_and_exports_every_row_once() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    execute_blocking(
        db.url(),
        "CREATE TABLE readings (id int8, taken timestamptz NOT NULL, v float8)",
    )
    .unwrap();
    execute_blocking(
        db.url(),
        &format!(
            "INSERT INTO readings SELECT i, timestamptz '2026-01-01 00:00:00+00' + \
             i * interval '1 second', i * 0.5 FROM generate_series(0, {}) AS i",
            ROWS - 1
        ),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_env(dir.path(), &[], JOBS_ENV);
    let register =
        serde_json::json!({"connection_id": "pg", "db_type": "postgres", "url": db.url()});
    let (status, body) = http_post_json(
        server.http,
        "/db-connections/register",
        &register.to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let export = r#"{"connection_id": "pg", "table": "readings", "format": "csv"}"#;
    let (status, body) = http_post_json(server.http, "/exports", export);
    assert_eq!(status, 202, "{body}");
    let job: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = job["job_id"].as_str().unwrap().to_owned();
    let path = format!("/exports/{id}");

    // Kill it mid-way: some chunks complete, most not.
    let deadline = Instant::now() + Duration::from_secs(60);
    let done_before = loop {
        let s = http_get_json(server.http, &path);
        assert_eq!(s["state"], "running", "the job ended before the kill: {s}");
        let done = s["chunks_done"].as_u64().unwrap();
        if done >= 5 {
            break done;
        }
        assert!(Instant::now() < deadline, "{s}");
        std::thread::sleep(Duration::from_millis(5));
    };
    server.kill9();

    let server = Server::start_env(dir.path(), &[], JOBS_ENV);
    let listed = http_get_json(server.http, &path);
    assert_eq!(listed["job_id"], id.as_str());
    // Kept after each chunk: at most the chunk being noted when it died is redone.
    assert!(
        listed["chunks_done"].as_u64().unwrap() + 1 >= done_before,
        "{listed} (had {done_before})"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let s = http_get_json(server.http, &path);
        if s["state"] != "running" {
            break s;
        }
        assert!(Instant::now() < deadline, "{s}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["rows"], ROWS);
    assert_eq!(done["chunks_done"], 200);

    // The file: the header and every id exactly once.
    let file = dir.path().join("exports").join(format!("{id}.csv"));
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("taken,id,v"));
    let mut ids: Vec<i64> = lines
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), usize::try_from(ROWS).unwrap());
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        usize::try_from(ROWS).unwrap(),
        "a row written twice"
    );
    assert_eq!((ids[0], ids[ids.len() - 1]), (0, ROWS - 1));
}
