//! Tests against a real InfluxDB 1.x (`influxd` from Debian's `influxdb`), started by
//! the test on free loopback ports with authentication on.

use std::time::{Duration, Instant};

use crate::{ConnectionSpec, DbType, Error, ping};

use crate::testkit::{InfluxServer, free_port};

#[tokio::test]
async fn influx_connections_are_checked_with_their_credentials() {
    let Some(server) = InfluxServer::start() else {
        return;
    };
    server.admin_query("CREATE DATABASE telegraf").unwrap();
    let t = Duration::from_secs(10);
    ping(&server.spec(), None, t).await.unwrap();
    let mut with_db = server.spec();
    with_db.database = Some("telegraf".to_owned());
    ping(&with_db, None, t).await.unwrap();

    // A database the server does not have: named, with the ones it has.
    with_db.database = Some("nope".to_owned());
    let e = ping(&with_db, None, t).await.unwrap_err();
    assert!(
        matches!(&e, Error::Invalid(m) if m.contains("\"nope\"") && m.contains("telegraf")),
        "{e}"
    );

    // A wrong password: authentication failed, the password never in the message.
    let mut wrong = server.spec();
    wrong.password = Some("not-the-password".to_owned());
    let e = ping(&wrong, None, t).await.unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, Error::Unreachable(_)), "{m}");
    assert!(m.contains("authentication failed"), "{m}");
    assert!(m.contains(&server.addr), "{m}");
    assert!(!m.contains("not-the-password"), "{m}");

    // No credentials on a server that wants them.
    let mut anonymous = server.spec();
    anonymous.username = None;
    anonymous.password = None;
    let m = ping(&anonymous, None, t).await.unwrap_err().to_string();
    assert!(m.contains("authentication failed"), "{m}");

    // Nothing listening.
    let mut gone = server.spec();
    gone.url = format!("http://127.0.0.1:{}", free_port());
    let e = ping(&gone, None, t).await.unwrap_err();
    assert!(
        matches!(&e, Error::Unreachable(m) if m.contains("influxdb at http://127.0.0.1:")),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------
// Export jobs against real sources.

use std::sync::Arc;

use datanexus_store::Store;

use crate::{
    DatasetRef, ExportOptions, ExportRequest, Exports, FileFormat, JobState, JobStatus, Target,
};

fn exports(dir: &std::path::Path, store: Option<Arc<dyn Store>>) -> Exports {
    Exports::new(
        ExportOptions {
            dir: Some(dir.to_path_buf()),
            divided_jobs: 7,
            worker_num: 3,
            ..ExportOptions::default()
        },
        store,
    )
}

fn request(connection_id: &str, table: &str, format: FileFormat) -> ExportRequest {
    ExportRequest {
        connection_id: connection_id.to_owned(),
        dataset: DatasetRef {
            table: table.to_owned(),
            database: None,
            time_column: None,
        },
        start_ns: None,
        end_ns: None,
        target: Target::File(format),
    }
}

/// Polls until the job ends (5 minutes at most: a stuck job, not a slow one, fails).
async fn finished(exports: &Exports, id: &str) -> JobStatus {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let status = exports.get(id).unwrap();
        if status.state != JobState::Running {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "export still running: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(any(feature = "postgres", feature = "kafka"))]
/// Runs python3 on `script` with `args`; its stdout.
fn python(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_postgres_table_exports_to_parquet_that_pyarrow_reads_back_exactly() {
    use datanexus_store_postgres::testkit::{TestDatabase, execute_blocking};
    let Some(db) = TestDatabase::create() else {
        return;
    };
    // 100,003 rows (not a multiple of the 7 chunks) over ~28 hours, two rows sharing
    // the last microsecond, and NULLs.
    execute_blocking(
        db.url(),
        "CREATE TABLE readings (id int8, taken timestamptz NOT NULL, host text, \
                                v float8, ok bool, note jsonb)",
    )
    .unwrap();
    execute_blocking(
        db.url(),
        "INSERT INTO readings \
         SELECT i, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second', \
                'h' || (i % 10), CASE WHEN i % 100 = 0 THEN NULL ELSE i * 0.25 END, \
                i % 2 = 0, jsonb_build_object('i', i) \
         FROM generate_series(0, 100001) AS i",
    )
    .unwrap();
    execute_blocking(
        db.url(),
        "INSERT INTO readings VALUES (100002, timestamptz '2026-01-01 00:00:00+00' + \
                100001 * interval '1 second', 'h9', 1.5, true, NULL)",
    )
    .unwrap();
    let mut spec = ConnectionSpec::new("pg", DbType::Postgres, db.url());
    spec = spec.validated().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exports = exports(dir.path(), None);
    let started = exports
        .start(&spec, request("pg", "readings", FileFormat::Parquet))
        .await
        .unwrap();
    assert_eq!(started.chunks, 7);
    assert_eq!(started.start.as_deref(), Some("2026-01-01T00:00:00Z"));
    let done = finished(&exports, &started.job_id).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(done.rows, 100_003);
    assert_eq!(done.chunks_done, 7);
    let (path, format) = exports.file(&started.job_id).unwrap();
    assert_eq!(format, FileFormat::Parquet);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), done.bytes);

    // An independent reader: pyarrow. Row count, and checksums computed by PostgreSQL.
    let read = python(
        "import sys, pyarrow.parquet as pq, pyarrow.compute as pc\n\
         t = pq.read_table(sys.argv[1])\n\
         print(t.num_rows, pc.sum(t['id']).as_py(), pc.sum(t['v']).as_py(), \
               pc.count(t['v']).as_py(), pc.sum(pc.cast(t['ok'], 'int64')).as_py(), \
               t.schema.field('taken').type, t.column_names)",
        &[path.to_str().unwrap()],
    );
    let expected = {
        let (client, _) = datanexus_store_postgres::connect(
            db.url(),
            &datanexus_store_postgres::Login::default(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let row = client
            .query_one(
                "SELECT count(*), sum(id)::int8, sum(v), count(v), sum(ok::int)::int8 FROM readings",
                &[],
            )
            .await
            .unwrap();
        let (n, ids, v, nv, ok): (i64, i64, f64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        format!(
            "{n} {ids} {v} {nv} {ok} timestamp[ns, tz=UTC] ['taken', 'id', 'host', 'v', 'ok', 'note']"
        )
    };
    assert_eq!(read, expected);

    // Bad requests are refused before a job starts.
    let mut backwards = request("pg", "readings", FileFormat::Csv);
    backwards.start_ns = Some(10);
    backwards.end_ns = Some(5);
    let e = exports.start(&spec, backwards).await.unwrap_err();
    assert!(
        matches!(&e, Error::Invalid(m) if m.contains("after end")),
        "{e}"
    );
    let e = exports
        .start(&spec, request("pg", "no_such_table", FileFormat::Csv))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::NotFound(m) if m.contains("no_such_table")),
        "{e}"
    );
    let e = exports
        .start(
            &spec,
            request("pg", "readings; DROP TABLE readings", FileFormat::Csv),
        )
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Invalid(_) | Error::NotFound(_)), "{e}");
    let mut wrong_time = request("pg", "readings", FileFormat::Csv);
    wrong_time.dataset.time_column = Some("host".to_owned());
    let e = exports.start(&spec, wrong_time).await.unwrap_err();
    assert!(
        matches!(&e, Error::Invalid(m) if m.contains("not a timestamp")),
        "{e}"
    );

    // A range of its own, both ends included: seconds 10..=19 are 10 rows.
    let mut ranged = request("pg", "readings", FileFormat::Csv);
    let base = 1_767_225_600_000_000_000_i64; // 2026-01-01T00:00:00Z
    ranged.start_ns = Some(base + 10_000_000_000);
    ranged.end_ns = Some(base + 19_000_000_000);
    let started = exports.start(&spec, ranged).await.unwrap();
    let done = finished(&exports, &started.job_id).await;
    assert_eq!(
        (done.state, done.rows),
        (JobState::Succeeded, 10),
        "{done:?}"
    );
    let (path, _) = exports.file(&started.job_id).unwrap();
    let csv = crate::files::read_text(&path);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "taken,id,host,v,ok,note");
    assert_eq!(
        lines[1],
        "2026-01-01T00:00:10Z,10,h0,2.5,true,\"{\"\"i\"\": 10}\""
    );
    assert_eq!(lines.len(), 11);

    // Cancelled while running: ends cancelled with the rows so far, no file.
    let slow = Exports::new(
        ExportOptions {
            dir: Some(dir.path().to_path_buf()),
            divided_jobs: 500,
            worker_num: 1,
            ..ExportOptions::default()
        },
        None,
    );
    let started = slow
        .start(&spec, request("pg", "readings", FileFormat::Ndjson))
        .await
        .unwrap();
    let cancelled = slow.cancel(&started.job_id).unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    let later = finished(&slow, &started.job_id).await;
    assert_eq!(later.state, JobState::Cancelled);
    assert!(later.rows < 100_003, "{later:?}");
    assert!(matches!(
        slow.file(&started.job_id),
        Err(Error::Conflict(_))
    ));
}

#[tokio::test]
async fn the_own_store_exports_to_ndjson_sample_for_sample() {
    use datanexus_model::{Labels, MetricType, Point};
    use datanexus_store_embedded::{EmbeddedStore, EmbeddedStoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(&dir.path().join("store"), EmbeddedStoreOptions::default()).unwrap(),
    );
    let mut points = Vec::new();
    for i in 0..5_000_i64 {
        let labels = Labels::new([("host".to_owned(), format!("h{}", i % 3))]).unwrap();
        points.push(
            Point::sample("temp", labels, i as f64 / 4.0, 1_000_000_000 * (1_000 + i))
                .with_kind(MetricType::Gauge),
        );
    }
    store.write_points(&points).await.unwrap();
    store.flush().await.unwrap();
    let spec = ConnectionSpec::new("own", DbType::Datanexus, "")
        .validated()
        .unwrap();
    let exports = exports(dir.path(), Some(Arc::clone(&store)));
    let started = exports
        .start(&spec, request("own", "temp", FileFormat::Ndjson))
        .await
        .unwrap();
    let done = finished(&exports, &started.job_id).await;
    assert_eq!(
        (done.state, done.rows),
        (JobState::Succeeded, 5_000),
        "{done:?}"
    );
    let (path, _) = exports.file(&started.job_id).unwrap();
    let mut exported: Vec<(String, String, f64)> = crate::files::read_text(&path)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["field"], "value");
            (
                v["time"].as_str().unwrap().to_owned(),
                v["host"].as_str().unwrap().to_owned(),
                v["value"].as_f64().unwrap(),
            )
        })
        .collect();
    exported.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected: Vec<(String, String, f64)> = points
        .iter()
        .map(|p| {
            (
                chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(p.timestamp_ns)
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                p.labels.iter().next().unwrap().1.to_owned(),
                p.fields[0].1.as_f64().unwrap(),
            )
        })
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(exported, expected);

    let e = exports
        .start(&spec, request("own", "nope", FileFormat::Ndjson))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::NotFound(m) if m.contains("nope")),
        "{e}"
    );
}

#[tokio::test]
async fn an_influx_measurement_exports_to_csv_with_its_tags_and_fields() {
    let Some(server) = InfluxServer::start() else {
        return;
    };
    server.admin_query("CREATE DATABASE telegraf").unwrap();
    // 2,500 points over two hosts, written with line protocol.
    let mut lines = String::new();
    for i in 0..2_500_u64 {
        lines.push_str(&format!(
            "cpu,host=h{} usage={}.5,count={}i,up=true {}\n",
            i % 2,
            i,
            i,
            (1_000 + i) * 1_000_000_000
        ));
    }
    server.write("telegraf", &lines).unwrap();
    let mut spec = server.spec();
    spec.database = Some("telegraf".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let exports = exports(dir.path(), None);
    let started = exports
        .start(&spec, request("influx", "cpu", FileFormat::Csv))
        .await
        .unwrap();
    let done = finished(&exports, &started.job_id).await;
    assert_eq!(
        (done.state, done.rows),
        (JobState::Succeeded, 2_500),
        "{done:?}"
    );
    let (path, _) = exports.file(&started.job_id).unwrap();
    let csv = crate::files::read_text(&path);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("time,host,count,up,usage"));
    assert_eq!(lines.next(), Some("1970-01-01T00:16:40Z,h0,0,true,0.5"));
    assert_eq!(
        lines.last(),
        Some("1970-01-01T00:58:19Z,h1,2499,true,2499.5")
    );
    assert_eq!(csv.lines().count(), 2_501);
}

/// 1,000,000 InfluxDB points → Kafka (tansu) as JSON records, read back by an
/// independent client (confluent-kafka in Python, assigned every partition from the
/// beginning): exactly the points, once each, each partition in time order.
#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_influx_points_reach_kafka_once_each() {
    use datanexus_broker::Broker;
    use datanexus_broker::kafka::{KafkaBroker, KafkaOptions};

    use crate::{KafkaTarget, MessageFormat};

    let Some(server) = InfluxServer::start() else {
        return;
    };
    let Some((_kafka, bootstrap)) = datanexus_broker::testkit::kafka_server().await else {
        return;
    };
    server.admin_query("CREATE DATABASE telegraf").unwrap();
    // Point i: host h(i mod 100), second 1,600,000,000 + i / 100, usage i + 0.25, n i.
    const POINTS: u64 = 1_000_000;
    let mut lines = String::new();
    for i in 0..POINTS {
        lines.push_str(&format!(
            "cpu,host=h{} usage={}.25,n={}i {}\n",
            i % 100,
            i,
            i,
            (1_600_000_000 + i / 100) * 1_000_000_000
        ));
        if (i + 1) % 50_000 == 0 {
            server.write("telegraf", &lines).unwrap();
            lines.clear();
        }
    }
    let topic = format!("export-{}", std::process::id());
    let admin = KafkaBroker::open(KafkaOptions {
        bootstrap_servers: bootstrap.clone(),
        ..KafkaOptions::default()
    })
    .unwrap();
    admin.ensure_topic(&topic, 4).await.unwrap();

    let mut spec = server.spec();
    spec.database = Some("telegraf".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let exports = exports(dir.path(), None);
    let mut req = request("influx", "cpu", FileFormat::Ndjson);
    req.target = Target::Kafka(KafkaTarget::new(&bootstrap, &topic, MessageFormat::Json).unwrap());
    let started = exports.start(&spec, req).await.unwrap();
    assert_eq!(started.chunks, 7);
    let done = finished(&exports, &started.job_id).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(done.rows, POINTS);
    assert_eq!(done.partitions.len(), 4, "{done:?}");
    for p in &done.partitions {
        assert_eq!(p.last_offset - p.first_offset + 1, p.records, "{p:?}");
    }
    assert_eq!(
        done.partitions.iter().map(|p| p.records).sum::<u64>(),
        POINTS
    );
    assert!(exports.file(&started.job_id).is_err());

    let read = python(
        "import sys, json\n\
         from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING\n\
         bootstrap, topic, want = sys.argv[1], sys.argv[2], int(sys.argv[3])\n\
         c = Consumer({'bootstrap.servers': bootstrap, 'group.id': 'check', \
                       'enable.auto.commit': False})\n\
         c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(4)])\n\
         seen, last, ordered, total, keys_ok, sample = set(), {}, True, 0, True, None\n\
         idle = 0\n\
         while len(seen) < want and idle < 30:\n\
         \x20   batch = c.consume(10000, 1.0)\n\
         \x20   idle = 0 if batch else idle + 1\n\
         \x20   for m in batch:\n\
         \x20       if m.error(): raise SystemExit(str(m.error()))\n\
         \x20       v = json.loads(m.value())\n\
         \x20       total += 1\n\
         \x20       seen.add(v['n'])\n\
         \x20       keys_ok = keys_ok and m.key() == v['host'].encode()\n\
         \x20       if last.get(m.partition(), '') > v['time']: ordered = False\n\
         \x20       last[m.partition()] = v['time']\n\
         \x20       if v['n'] == 123457: sample = v\n\
         extra = c.consume(100, 2.0)\n\
         print(total + len(extra), len(seen), sum(seen), ordered, keys_ok, \
               json.dumps(sample, sort_keys=True))",
        &[&bootstrap, &topic, &POINTS.to_string()],
    );
    let expected_sum = POINTS * (POINTS - 1) / 2;
    assert_eq!(
        read,
        format!(
            "{POINTS} {POINTS} {expected_sum} True True \
             {{\"host\": \"h57\", \"n\": 123457, \"time\": \"2020-09-13T12:47:14Z\", \
             \"usage\": 123457.25}}"
        )
    );
}

/// Browsing a PostgreSQL connection: the exportable tables (quoted where needed, other
/// schemas qualified, tables without a timestamp left out), a table's columns and
/// range, and its rows by time, a page at a time.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_postgres_connection_is_browsed_by_table_and_time() {
    use datanexus_store_postgres::testkit::{TestDatabase, execute_blocking};

    use crate::browse;
    let Some(db) = TestDatabase::create() else {
        return;
    };
    for sql in [
        "CREATE TABLE readings (taken timestamptz NOT NULL, site text, v float8)",
        "INSERT INTO readings SELECT timestamptz '2026-05-01 00:00:00+00' + \
         i * interval '1 minute', 's' || (i % 3), i FROM generate_series(0, 99) AS i",
        "CREATE TABLE \"Mixed Case\" (t timestamp, n int4)",
        "CREATE TABLE no_time (n int4)",
        "CREATE SCHEMA s2",
        "CREATE TABLE s2.events (at timestamptz, what text)",
    ] {
        execute_blocking(db.url(), sql).unwrap();
    }
    let spec = ConnectionSpec::new("pg", DbType::Postgres, db.url())
        .validated()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let names = browse::datasets(&spec, None, None, timeout).await.unwrap();
    assert_eq!(names, ["\"Mixed Case\"", "readings", "s2.events"]);

    let dataset = DatasetRef {
        table: "readings".to_owned(),
        database: None,
        time_column: None,
    };
    let detail = browse::detail(&spec, &dataset, None, timeout)
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&detail).unwrap(),
        serde_json::json!({"name": "readings", "time_column": "taken",
            "columns": [{"name": "site", "type": "text", "role": "tag"},
                        {"name": "v", "type": "float", "role": "field"}],
            "first": "2026-05-01T00:00:00Z", "last": "2026-05-01T01:39:00Z"})
    );

    // Minutes 10..=19, three rows after skipping four.
    let start = 1_777_593_600_000_000_000 + 10 * 60_000_000_000;
    let range = (Some(start), Some(start + 9 * 60_000_000_000));
    let page = browse::query_by_time(&spec, &dataset, range, 4, 3, None, timeout)
        .await
        .unwrap();
    let v: Vec<f64> = page.rows.iter().map(|r| r["v"].as_f64().unwrap()).collect();
    assert_eq!(v, [14.0, 15.0, 16.0]);
    assert_eq!(page.rows[0]["taken"], "2026-05-01T00:14:00Z");
    assert_eq!(page.next_offset, Some(7));
    let last = browse::query_by_time(&spec, &dataset, range, 7, 3, None, timeout)
        .await
        .unwrap();
    assert_eq!((last.count, last.next_offset), (3, None));
    let all = browse::query_by_time(&spec, &dataset, (None, None), 0, 10_000, None, timeout)
        .await
        .unwrap();
    assert_eq!((all.count, all.next_offset), (100, None));

    let e = browse::query_by_time(&spec, &dataset, (None, None), 0, 10_001, None, timeout)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
    let missing = DatasetRef {
        table: "no_such".to_owned(),
        ..dataset.clone()
    };
    let e = browse::detail(&spec, &missing, None, timeout)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");

    // A query instead of a table: its result columns, its rows by its time column.
    let query = DatasetRef {
        table: "SELECT taken, site, v * 2 AS doubled FROM readings WHERE site = 's1';".to_owned(),
        ..dataset.clone()
    };
    let detail = browse::detail(&spec, &query, None, timeout).await.unwrap();
    assert_eq!(detail.time_column, "taken");
    assert_eq!(detail.columns.len(), 2);
    assert_eq!(detail.first.as_deref(), Some("2026-05-01T00:01:00Z"));
    let page = browse::query_by_time(&spec, &query, (None, None), 0, 100, None, timeout)
        .await
        .unwrap();
    assert_eq!(page.count, 33);
    assert_eq!(
        page.rows[1],
        serde_json::json!({"taken": "2026-05-01T00:04:00Z",
        "site": "s1", "doubled": 8.0})
    );
    // A data-modifying query is refused (it cannot be a subquery, and reads are
    // read-only transactions), and nothing is deleted.
    let deleting = DatasetRef {
        table: "WITH gone AS (DELETE FROM readings RETURNING *) SELECT * FROM gone".to_owned(),
        ..dataset.clone()
    };
    let e = browse::detail(&spec, &deleting, None, timeout)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
    let bad = DatasetRef {
        table: "SELECT nope FROM readings".to_owned(),
        ..dataset.clone()
    };
    let e = browse::detail(&spec, &bad, None, timeout)
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Invalid(m) if m.contains("nope")), "{e}");
    let all = browse::query_by_time(&spec, &dataset, (None, None), 0, 10_000, None, timeout)
        .await
        .unwrap();
    assert_eq!(all.count, 100);
}

/// Browsing an InfluxDB connection: its measurements, their tags and fields, rows.
#[tokio::test]
async fn an_influx_connection_is_browsed_by_measurement_and_time() {
    use crate::browse;
    let Some(server) = InfluxServer::start() else {
        return;
    };
    server.admin_query("CREATE DATABASE telegraf").unwrap();
    server
        .write(
            "telegraf",
            "cpu,host=a usage=1.5 1000000000000\ncpu,host=b usage=2.5 1001000000000\n\
             mem,host=a used=7i 1000000000000\n",
        )
        .unwrap();
    let spec = server.spec();
    let timeout = Duration::from_secs(10);
    let names = browse::datasets(&spec, Some("telegraf"), None, timeout)
        .await
        .unwrap();
    assert_eq!(names, ["cpu", "mem"]);
    let dataset = DatasetRef {
        table: "cpu".to_owned(),
        database: Some("telegraf".to_owned()),
        time_column: None,
    };
    let detail = browse::detail(&spec, &dataset, None, timeout)
        .await
        .unwrap();
    assert_eq!(detail.columns.len(), 2);
    assert_eq!(detail.first.as_deref(), Some("1970-01-01T00:16:40Z"));
    assert_eq!(detail.last.as_deref(), Some("1970-01-01T00:16:41Z"));
    let page = browse::query_by_time(&spec, &dataset, (None, None), 1, 10, None, timeout)
        .await
        .unwrap();
    assert_eq!(page.count, 1);
    assert_eq!(
        page.rows[0],
        serde_json::json!({"time": "1970-01-01T00:16:41Z", "host": "b", "usage": 2.5})
    );
    let e = browse::datasets(&spec, None, None, timeout)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
}
