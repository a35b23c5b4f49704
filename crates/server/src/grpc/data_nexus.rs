//! `data_nexus.MetricsService` (wire-compatible with the Data Nexus seed).
//!
//! - `IngestMetric(Metric) → IngestResponse{eventId}`; `IngestMetrics(BatchMetrics) →
//!   BatchIngestResponse{eventIds}` with one real record id per metric, in order (the
//!   seed returned blanks).
//! - Conversion: `datanexus_ingest::seed` (`Metric.type` case-insensitive, timestamp in
//!   Unix seconds with 0 = receive time). A batch is all or nothing: one invalid metric
//!   rejects it with `INVALID_ARGUMENT` naming the index and the problem
//!   (`metrics[3]: invalid metric name "9x": …`), so a client never has to guess which
//!   part was stored.
//! - Replies are sent only once the records are durable in the broker.

use datanexus_model::time;
use datanexus_proto::data_nexus::metrics_service_server::MetricsService;
use datanexus_proto::data_nexus::{BatchIngestResponse, BatchMetrics, IngestResponse, Metric};
use tonic::{Request, Response, Status};

use crate::observe::Api;
use crate::{AppState, Error};

/// The `data_nexus.MetricsService` implementation.
#[derive(Debug, Clone)]
pub(crate) struct DataNexusService {
    state: AppState,
}

impl DataNexusService {
    pub(crate) fn new(state: AppState) -> Self {
        DataNexusService { state }
    }

    async fn ingest_one(&self, metric: Metric) -> Result<String, Error> {
        let point = datanexus_ingest::endpoint::INGEST_METRIC(
            metric,
            time::now_ns(),
            &self.state.options().limits,
        )?;
        let ids = self
            .state
            .ingestor()
            .points(std::slice::from_ref(&point))
            .await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| Error::Internal("broker returned no record id".into()))
    }

    async fn ingest_batch(&self, metrics: Vec<Metric>) -> Result<Vec<String>, Error> {
        let options = self.state.options();
        let points = datanexus_ingest::endpoint::INGEST_METRICS(
            metrics,
            &options.limits,
            options.max_batch_metrics,
            time::now_ns(),
        )?;
        self.state.ingestor().points(&points).await
    }
}

#[tonic::async_trait]
impl MetricsService for DataNexusService {
    async fn ingest_metric(
        &self,
        request: Request<Metric>,
    ) -> Result<Response<IngestResponse>, Status> {
        let outcome = self.ingest_one(request.into_inner()).await;
        let event_id = self
            .state
            .observe_ingest(Api::GrpcDataNexus, outcome, |_| 1)?;
        Ok(Response::new(IngestResponse { event_id }))
    }

    async fn ingest_metrics(
        &self,
        request: Request<BatchMetrics>,
    ) -> Result<Response<BatchIngestResponse>, Status> {
        // The message stays in memory until it is durable: it takes its bytes from the
        // in-flight byte budget meanwhile.
        let held =
            self.state
                .byte_budget()
                .try_reserve(datanexus_proto::prost::Message::encoded_len(
                    request.get_ref(),
                ));
        let outcome = match held {
            Ok(_held) => self.ingest_batch(request.into_inner().metrics).await,
            Err(e) => Err(e),
        };
        let event_ids = self
            .state
            .observe_ingest(Api::GrpcDataNexus, outcome, Vec::len)?;
        Ok(Response::new(BatchIngestResponse { event_ids }))
    }
}
