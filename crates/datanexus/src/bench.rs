//! `datanexus bench`: a load generator against a running server.
//!
//! Workloads (`--workload`):
//! - `grpc-batch`: `data_nexus.IngestMetrics` batches over gRPC (`--grpc-addr`);
//! - `stream`: `nimbus.NimbusService` bidi round trips (`--grpc-addr`, `--echo`);
//! - `http-json`: `POST /metrics` JSON arrays (`--http-addr`);
//! - `line-protocol`: `POST /write?precision=ns` InfluxDB line protocol (`--db`);
//! - `remote-write`: `POST /api/v1/write` Prometheus remote write;
//! - `query`: `GET --query-path`, `--queries` times.
//!
//! `--clients` connections share the work; each request's latency goes into an HDR
//! histogram. Non-2xx answers (and gRPC or transport errors) are counted and shown,
//! never dropped, and make the command exit non-zero. The ingest workloads then measure
//! ingest-to-queryable (unless `--no-verify`): the time from the first request until a
//! count query on `--http-addr` sees every acknowledged sample of the run. Progress goes
//! to stderr, the result to stdout as a table or (`--format json`) one JSON object per
//! measured run.
//!
//! # Layout
//! - `grpc_batch.rs`, `stream.rs` (+ `echo.rs`, the floor): the gRPC workloads.
//! - `ingest.rs`: the HTTP workloads; `payload.rs`: their pre-generated bodies;
//!   `load.rs`: the shared HTTP load loop; `http.rs`: one HTTP/1.1 connection.
//! - `verify.rs`: ingest-to-queryable. `report.rs`: results, table, JSON, progress.

use crate::cli::{BenchArgs, Workload};

mod echo;
mod grpc_batch;
pub(crate) mod http;
pub(crate) mod ingest;
mod load;
mod payload;
pub(crate) mod report;
mod stream;
mod verify;

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let format = args.format;
    let reports = match args.workload {
        Workload::GrpcBatch => vec![grpc_batch::run(args).await?],
        Workload::Stream => stream::run(&args).await?,
        Workload::HttpJson | Workload::LineProtocol | Workload::RemoteWrite => {
            vec![ingest::run(&args).await?]
        }
        Workload::Query => vec![ingest::query(&args).await?],
    };
    report::print(&reports, format)?;
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.succeeded())
        .map(|r| {
            let verify = r.verify_error.as_deref().map_or(String::new(), |e| {
                format!("; ingest-to-queryable failed: {e}")
            });
            format!(
                "{}: {} of {} requests failed{verify}",
                r.workload,
                r.errors,
                r.errors + r.requests_ok
            )
        })
        .collect();
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
    Ok(())
}
