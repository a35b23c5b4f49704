//! gRPC services against a real server on port 0.

use std::collections::{HashMap, HashSet};

use datanexus_model::codec::decode_point;
use datanexus_proto::data_nexus::metrics_service_client::MetricsServiceClient;
use datanexus_proto::data_nexus::{BatchMetrics, Metric};
use datanexus_proto::prost_types::Timestamp;
use datanexus_proto::raftmetrics::v1::metrics_service_client::MetricsServiceClient as RaftClient;
use datanexus_proto::raftmetrics::v1::{MetricBatch, MetricEntry};
use datanexus_server::ServerOptions;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::support::{Running, TOKEN, options, read_all, with_auth};

fn metric(name: &str, kind: &str) -> Metric {
    Metric {
        name: name.into(),
        value: 1.25,
        r#type: kind.into(),
        timestamp: 1_712_836_800,
        labels: HashMap::from([("host".to_owned(), "a".to_owned())]),
    }
}

fn batch(names: &[&str]) -> BatchMetrics {
    BatchMetrics {
        metrics: names.iter().map(|n| metric(n, "counter")).collect(),
    }
}

fn entry(name: &str) -> MetricEntry {
    MetricEntry {
        metric_name: name.into(),
        value: 3.0,
        timestamp: Some(Timestamp {
            seconds: 1_712_836_800,
            nanos: 0,
        }),
        labels: HashMap::new(),
        description: Some("a help text".into()),
    }
}

#[tokio::test]
async fn ingest_metrics_returns_one_distinct_durable_id_per_metric() {
    let server = Running::start(options()).await;
    let mut client = MetricsServiceClient::new(server.channel().await);
    let names = ["m0", "m1", "m2", "m3", "m4"];
    let ids = client
        .ingest_metrics(batch(&names))
        .await
        .expect("ingest")
        .into_inner()
        .event_ids;
    assert_eq!(ids.len(), names.len());
    assert!(ids.iter().all(|id| !id.is_empty()), "{ids:?}");
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        names.len(),
        "{ids:?}"
    );

    let single = client
        .ingest_metric(metric("single", ""))
        .await
        .expect("ingest")
        .into_inner()
        .event_id;
    assert!(!single.is_empty() && !ids.contains(&single));

    let records = read_all(server.broker.as_ref(), "metrics", 6).await;
    for (name, id) in names.iter().zip(&ids) {
        let record = records
            .iter()
            .find(|r| &r.id.to_string() == id)
            .expect("record of id");
        let point = decode_point(&record.value).expect("decodes");
        assert_eq!(point.measurement, *name);
        assert_eq!(point.timestamp_ns, 1_712_836_800_000_000_000);
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn invalid_batches_are_rejected_whole_with_invalid_argument() {
    let server = Running::start(ServerOptions {
        max_batch_metrics: 3,
        ..options()
    })
    .await;
    let mut client = MetricsServiceClient::new(server.channel().await);

    let status = client
        .ingest_metrics(batch(&["ok", "9x"]))
        .await
        .expect_err("bad name");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("metrics[1]: invalid metric name \"9x\""),
        "{}",
        status.message()
    );

    let bad_type = BatchMetrics {
        metrics: vec![metric("ok", "gauge"), metric("ok", "countr")],
    };
    let status = client.ingest_metrics(bad_type).await.expect_err("bad type");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("metrics[1]: unknown metric type \"countr\""),
        "{}",
        status.message()
    );

    let status = client
        .ingest_metrics(batch(&["a", "b", "c", "d"]))
        .await
        .expect_err("too many");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("limit of 3"),
        "{}",
        status.message()
    );

    let status = client
        .ingest_metrics(BatchMetrics::default())
        .await
        .expect_err("empty");
    assert_eq!(status.code(), Code::InvalidArgument);

    let status = client
        .ingest_metric(metric("cpu", "countr"))
        .await
        .expect_err("bad type");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("\"countr\""),
        "{}",
        status.message()
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_batch_over_the_inflight_budget_is_resource_exhausted() {
    let server = Running::start(ServerOptions {
        max_inflight_records: 1,
        ..options()
    })
    .await;
    let mut client = MetricsServiceClient::new(server.channel().await);
    let status = client
        .ingest_metrics(batch(&["a", "b"]))
        .await
        .expect_err("over budget");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("in-flight budget of 1"),
        "{}",
        status.message()
    );
    assert_eq!(
        client
            .ingest_metrics(batch(&["a"]))
            .await
            .expect("fits")
            .into_inner()
            .event_ids
            .len(),
        1
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn auth_requires_a_token_except_for_health() {
    let server = Running::start(with_auth(options())).await;
    let channel = server.channel().await;
    let status = MetricsServiceClient::new(channel.clone())
        .ingest_metrics(batch(&["a"]))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("missing bearer token"),
        "{}",
        status.message()
    );

    let with_token = |token: &'static str| {
        move |mut request: Request<()>| {
            let value = MetadataValue::try_from(format!("Bearer {token}")).expect("ascii");
            request.metadata_mut().insert("authorization", value);
            Ok(request)
        }
    };
    let mut wrong = MetricsServiceClient::with_interceptor(channel.clone(), with_token("nope"));
    assert_eq!(
        wrong
            .ingest_metrics(batch(&["a"]))
            .await
            .expect_err("wrong token")
            .code(),
        Code::Unauthenticated
    );
    let mut right = MetricsServiceClient::with_interceptor(channel.clone(), with_token(TOKEN));
    let ids = right
        .ingest_metrics(batch(&["a"]))
        .await
        .expect("right token")
        .into_inner()
        .event_ids;
    assert_eq!(ids.len(), 1);

    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert_eq!(
        health
            .expect("health is not auth-gated")
            .into_inner()
            .status,
        ServingStatus::Serving as i32
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn raftmetrics_records_batches_and_rejects_invalid_entries() {
    let server = Running::start(options()).await;
    let mut client = RaftClient::new(server.channel().await);
    let reply = client
        .batch_send_metrics(MetricBatch {
            entries: vec![entry("disk_free"), entry("disk_used")],
            batch_id: None,
        })
        .await
        .expect("batch")
        .into_inner();
    assert!(reply.success);
    assert_eq!(reply.message, "recorded 2 metrics");
    assert_eq!(reply.error_code, None);

    let reply = client
        .send_metric(entry("uptime"))
        .await
        .expect("single")
        .into_inner();
    assert_eq!(
        (reply.success, reply.message.as_str()),
        (true, "recorded 1 metric")
    );

    let bad = MetricBatch {
        entries: vec![entry("ok"), entry("bad name")],
        batch_id: Some("b1".into()),
    };
    let status = client.batch_send_metrics(bad).await.expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("entries[1]: invalid metric name \"bad name\""),
        "{}",
        status.message()
    );

    let records = read_all(server.broker.as_ref(), "metrics", 3).await;
    let help: Vec<_> = records
        .iter()
        .map(|r| decode_point(&r.value).expect("decodes").help)
        .collect();
    assert!(
        help.iter().all(|h| h.as_deref() == Some("a help text")),
        "{help:?}"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn health_reports_every_service_serving() {
    let server = Running::start(options()).await;
    let mut health = HealthClient::new(server.channel().await);
    for service in [
        "",
        "data_nexus.MetricsService",
        "raftmetrics.v1.MetricsService",
        "nimbus.NimbusService",
        "datanexus.v1.EventStream",
    ] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check");
        assert_eq!(
            reply.into_inner().status,
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn run_returns_after_shutdown_and_stops_accepting() {
    let server = Running::start(options()).await;
    let grpc_url = server.grpc_url.clone();
    let http_addr = server.http_addr;
    // Both listeners serve before shutdown.
    let _channel = server.channel().await;
    assert!(tokio::net::TcpStream::connect(http_addr).await.is_ok());

    server.shutdown().await.expect("run returns Ok");
    assert!(
        tokio::net::TcpStream::connect(http_addr).await.is_err(),
        "http listener closed"
    );
    let reconnect = tonic::transport::Endpoint::from_shared(grpc_url)
        .expect("url")
        .connect()
        .await;
    assert!(reconnect.is_err(), "grpc listener closed");
}

#[tokio::test]
async fn reflection_lists_exactly_the_served_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = Running::start(options()).await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = replies.message().await.expect("reply").expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "data_nexus.MetricsService",
            "datanexus.v1.EventStream",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "nimbus.NimbusService",
            "raftmetrics.v1.MetricsService"
        ]
    );
    drop(replies);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn grpc_ingest_is_counted_by_api_with_errors_by_kind() {
    let server = Running::start(options()).await;
    let channel = server.channel().await;
    let mut data_nexus = MetricsServiceClient::new(channel.clone());
    data_nexus
        .ingest_metrics(batch(&["a", "b", "c"]))
        .await
        .expect("ingest");
    data_nexus
        .ingest_metric(metric("d", ""))
        .await
        .expect("ingest");
    let invalid = data_nexus
        .ingest_metric(metric("9x", ""))
        .await
        .expect_err("invalid name");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let mut raft = RaftClient::new(channel);
    raft.batch_send_metrics(MetricBatch {
        entries: vec![entry("e"), entry("f")],
        batch_id: None,
    })
    .await
    .expect("send");

    let text = server.telemetry.encode();
    for line in [
        "datanexus_ingest_requests_total{api=\"grpc_data_nexus\"} 3",
        "datanexus_ingested_records_total{api=\"grpc_data_nexus\"} 4",
        "datanexus_ingest_requests_total{api=\"grpc_raftmetrics\"} 1",
        "datanexus_ingested_records_total{api=\"grpc_raftmetrics\"} 2",
        "datanexus_errors_total{component=\"ingest\",kind=\"invalid_input\"} 1",
        "datanexus_queue_depth{queue=\"inflight_records\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn grpc_auth_failures_are_counted_as_unauthenticated() {
    let server = Running::start(with_auth(options())).await;
    let status = MetricsServiceClient::new(server.channel().await)
        .ingest_metrics(batch(&["a"]))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let text = server.telemetry.encode();
    let line = "datanexus_errors_total{component=\"ingest\",kind=\"unauthenticated\"} 1";
    assert!(
        text.lines().any(|l| l == line),
        "missing {line:?} in\n{text}"
    );
    server.shutdown().await.expect("clean shutdown");
}
