//! `raftmetrics.v1.MetricsService` (wire-compatible with the RaftMetrics seed, which
//! declared it but never served it).
//!
//! - `SendMetric(MetricEntry)` and `BatchSendMetrics(MetricBatch)` answer
//!   `MetricResponse{success: true, message: "recorded N metrics"}` once the batch is
//!   durable. `timestamp` absent = the time the server received it; `description`
//!   becomes the family's help text; the metric type is untyped.
//! - Invalid input is answered with the gRPC status `INVALID_ARGUMENT` (naming the entry
//!   index and the problem), not with `success: false`: every other failure (auth,
//!   overload, broker down) is a status too, so clients handle errors in one place and
//!   generic gRPC tooling (retries, metrics, logs) sees them. `success` is therefore
//!   always `true` in a response, and `error_code` is never set.
//! - A batch is all or nothing, like `data_nexus.IngestMetrics`.

use datanexus_model::{Limits, MetricType, Point, time};
use datanexus_proto::raftmetrics::v1::metrics_service_server::MetricsService;
use datanexus_proto::raftmetrics::v1::{MetricBatch, MetricEntry, MetricResponse};
use tonic::{Request, Response, Status};

use crate::convert::{SeedSample, check_batch_len, convert_batch};
use crate::observe::Api;
use crate::{AppState, Error};

/// The `raftmetrics.v1.MetricsService` implementation.
#[derive(Debug, Clone)]
pub(crate) struct RaftMetricsService {
    state: AppState,
}

impl RaftMetricsService {
    pub(crate) fn new(state: AppState) -> Self {
        RaftMetricsService { state }
    }

    /// Appends `points` (or fails with `conversion`'s error) and counts the request.
    async fn record(
        &self,
        points: Result<Vec<Point>, Error>,
        batch_id: Option<&str>,
    ) -> Result<Response<MetricResponse>, Error> {
        let outcome = match points {
            Ok(points) => self.state.ingestor().points(&points).await,
            Err(e) => Err(e),
        };
        let ids = self
            .state
            .observe_ingest(Api::GrpcRaftmetrics, outcome, Vec::len)?;
        let n = ids.len();
        let noun = if n == 1 { "metric" } else { "metrics" };
        let message = match batch_id.filter(|id| !id.is_empty()) {
            Some(id) => format!("recorded {n} {noun} (batch {id:?})"),
            None => format!("recorded {n} {noun}"),
        };
        Ok(Response::new(MetricResponse {
            success: true,
            message,
            error_code: None,
        }))
    }
}

/// Converts one entry; `now_ns` replaces an absent timestamp.
fn entry_to_point(e: MetricEntry, now_ns: i64, limits: &Limits) -> datanexus_model::Result<Point> {
    let timestamp_ns = match e.timestamp {
        Some(ts) => time::from_seconds_nanos(ts.seconds, ts.nanos)?,
        None => now_ns,
    };
    SeedSample {
        name: e.metric_name,
        value: e.value,
        kind: MetricType::Untyped,
        labels: e.labels,
        timestamp_ns,
        help: e.description,
    }
    .into_point(limits)
}

#[tonic::async_trait]
impl MetricsService for RaftMetricsService {
    async fn send_metric(
        &self,
        request: Request<MetricEntry>,
    ) -> Result<Response<MetricResponse>, Status> {
        let point = entry_to_point(
            request.into_inner(),
            time::now_ns(),
            &self.state.options().limits,
        )
        .map(|p| vec![p])
        .map_err(Error::from);
        Ok(self.record(point, None).await?)
    }

    async fn batch_send_metrics(
        &self,
        request: Request<MetricBatch>,
    ) -> Result<Response<MetricResponse>, Status> {
        let MetricBatch { entries, batch_id } = request.into_inner();
        let options = self.state.options();
        let now_ns = time::now_ns();
        let points =
            check_batch_len(entries.len(), options.max_batch_metrics, "entries").and_then(|()| {
                convert_batch(entries, "entries", now_ns, |e, now_ns| {
                    entry_to_point(e, now_ns, &options.limits)
                })
            });
        Ok(self.record(points, batch_id.as_deref()).await?)
    }
}

#[cfg(test)]
mod tests {
    use datanexus_proto::prost_types::Timestamp;

    use super::*;

    fn entry(timestamp: Option<Timestamp>) -> MetricEntry {
        MetricEntry {
            metric_name: "disk_free".into(),
            value: 2.0,
            timestamp,
            labels: [("dev".to_owned(), "sda".to_owned())].into(),
            description: Some("free bytes".into()),
        }
    }

    #[test]
    fn converts_timestamp_and_description() {
        let p = entry_to_point(
            entry(Some(Timestamp {
                seconds: 2,
                nanos: 5,
            })),
            0,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(p.timestamp_ns, 2_000_000_005);
        assert_eq!(p.help.as_deref(), Some("free bytes"));
        assert_eq!(p.labels.get("dev"), Some("sda"));
        assert_eq!(
            entry_to_point(entry(None), 77, &Limits::default())
                .unwrap()
                .timestamp_ns,
            77
        );
    }

    #[test]
    fn rejects_out_of_range_nanos() {
        let e = entry_to_point(
            entry(Some(Timestamp {
                seconds: 1,
                nanos: -1,
            })),
            0,
            &Limits::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("nanos"), "{e}");
    }
}
