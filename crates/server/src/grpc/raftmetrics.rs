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

use datanexus_model::{Point, time};
use datanexus_proto::raftmetrics::v1::metrics_service_server::MetricsService;
use datanexus_proto::raftmetrics::v1::{MetricBatch, MetricEntry, MetricResponse};
use tonic::{Request, Response, Status};

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

#[tonic::async_trait]
impl MetricsService for RaftMetricsService {
    async fn send_metric(
        &self,
        request: Request<MetricEntry>,
    ) -> Result<Response<MetricResponse>, Status> {
        let point = datanexus_ingest::endpoint::SEND_METRIC(
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
        // The message stays in memory until it is durable: it takes its bytes from the
        // in-flight byte budget meanwhile.
        let held =
            self.state
                .byte_budget()
                .try_reserve(datanexus_proto::prost::Message::encoded_len(
                    request.get_ref(),
                ));
        let MetricBatch { entries, batch_id } = request.into_inner();
        let options = self.state.options();
        let points = held.and_then(|held| {
            datanexus_ingest::endpoint::BATCH_SEND_METRICS(
                entries,
                &options.limits,
                options.max_batch_metrics,
                time::now_ns(),
            )
            .map(|points| (points, held))
            .map_err(Error::from)
        });
        match points {
            Ok((points, _held)) => Ok(self.record(Ok(points), batch_id.as_deref()).await?),
            Err(e) => Ok(self.record(Err(e), batch_id.as_deref()).await?),
        }
    }
}
