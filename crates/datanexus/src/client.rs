//! `datanexus client`: sample clients of the gRPC services.
//!
//! - `client stream`: the NimbusGRPC seed's sample client — connects to
//!   `nimbus.NimbusService.ProcessEvent` with metadata `client_id`, sends one event per
//!   number from `--start` to `--end`, and prints each response as it arrives;
//!   `--start 0 --end 0` only listens (for results replayed after a reconnect).
//! - `client metric`: sends one metric with `data_nexus.MetricsService.IngestMetric` or
//!   `raftmetrics.v1.MetricsService.SendMetric` and prints the answer.

use anyhow::Context;
use datanexus_proto::nimbus::nimbus_service_client::NimbusServiceClient;
use datanexus_proto::nimbus::{EventRequest, EventResponse};
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::cli::{ClientCommand, MetricApi, MetricArgs, StreamArgs};

pub(crate) async fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Stream(args) => stream(args).await,
        ClientCommand::Metric(args) => metric(args).await,
    }
}

fn request<T>(
    message: T,
    client_id: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(message);
    if let Some(id) = client_id {
        req.metadata_mut().insert(
            "client_id",
            MetadataValue::try_from(id).context("client id is not valid metadata")?,
        );
    }
    if let Some(t) = token {
        let v = MetadataValue::try_from(format!("Bearer {t}"))
            .context("token is not valid metadata")?;
        req.metadata_mut().insert("authorization", v);
    }
    Ok(req)
}

async fn channel(addr: &str) -> anyhow::Result<Channel> {
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    Channel::from_shared(url.clone())?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

async fn stream(args: StreamArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.start <= args.end, "--start must not exceed --end");
    let listen_only = args.start == 0 && args.end == 0;
    let expected = if listen_only {
        u64::MAX
    } else {
        (i64::from(args.end) - i64::from(args.start) + 1) as u64
    };
    let mut client = NimbusServiceClient::new(channel(&args.addr).await?);
    let (tx, rx) = tokio::sync::mpsc::channel::<EventRequest>(1024);
    let sender = tokio::spawn({
        let event = args.event.clone();
        async move {
            if listen_only {
                // Keep the request stream open without sending anything.
                std::future::pending::<()>().await;
            }
            for number in args.start..=args.end {
                if tx
                    .send(EventRequest {
                        event_name: event.clone(),
                        number,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            // Keep the stream open until every response has arrived.
            std::future::pending::<()>().await;
        }
    });
    let req = request(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        Some(&args.client_id),
        args.token.as_deref(),
    )?;
    let mut responses = client
        .process_event(req)
        .await
        .context("ProcessEvent failed")?
        .into_inner();
    let mut received = 0u64;
    while received < expected {
        match responses.next().await {
            Some(Ok(resp)) => {
                println!("{}", describe(&resp));
                received += 1;
            }
            Some(Err(status)) => {
                sender.abort();
                anyhow::bail!(
                    "stream closed by the server: {:?}: {}",
                    status.code(),
                    status.message()
                );
            }
            None => break,
        }
    }
    sender.abort();
    Ok(())
}

/// `sq(3) = 9`, or `sq(46341) failed: …` for an in-band error.
fn describe(r: &EventResponse) -> String {
    let error = r
        .log
        .as_ref()
        .and_then(|l| l.steps.iter().rev().find_map(|s| s.metadata.get("error")));
    match error {
        Some(e) => format!("{}({}) failed: {e}", r.event_name, r.number),
        None => format!("{}({}) = {}", r.event_name, r.number, r.result),
    }
}

async fn metric(args: MetricArgs) -> anyhow::Result<()> {
    let labels = args
        .labels
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .context("labels are k=v")
        })
        .collect::<anyhow::Result<std::collections::HashMap<_, _>>>()?;
    let channel = channel(&args.addr).await?;
    match args.api {
        MetricApi::DataNexus => {
            use datanexus_proto::data_nexus::Metric;
            use datanexus_proto::data_nexus::metrics_service_client::MetricsServiceClient;
            let m = Metric {
                name: args.name,
                value: args.value,
                r#type: args.r#type,
                timestamp: 0,
                labels,
            };
            let resp = MetricsServiceClient::new(channel)
                .ingest_metric(request(m, None, args.token.as_deref())?)
                .await?;
            println!("eventId {}", resp.into_inner().event_id);
        }
        MetricApi::Raftmetrics => {
            use datanexus_proto::raftmetrics::v1::MetricEntry;
            use datanexus_proto::raftmetrics::v1::metrics_service_client::MetricsServiceClient;
            let e = MetricEntry {
                metric_name: args.name,
                value: args.value,
                timestamp: None,
                labels,
                description: None,
            };
            let resp = MetricsServiceClient::new(channel)
                .send_metric(request(e, None, args.token.as_deref())?)
                .await?;
            let r = resp.into_inner();
            println!("success {} message {:?}", r.success, r.message);
        }
    }
    Ok(())
}
