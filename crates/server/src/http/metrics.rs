//! `POST /metrics`: the RaftMetrics seed's record call, one metric or an array.
//!
//! Body: `{"metric_name": str, "value": number}` plus optional `labels` (object of
//! strings), `timestamp` (RFC 3339 string or Unix seconds), `type` (counter | gauge |
//! histogram | summary | untyped) and `help` (alias `description`). Unknown fields are
//! rejected, so a typo (`"lables"`) is an error instead of silently dropped labels.
//! Replies `200 {"success":true,"message":"metric recorded","id":…}` for one metric and
//! `200 {"success":true,"message":"recorded N metrics","ids":[…]}` for an array, once
//! durable; an array is all or nothing.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use datanexus_model::{Limits, MetricType, Point, time};
use serde::{Deserialize, Serialize};

use crate::convert::{JsonTimestamp, SeedSample, check_batch_len, convert_batch};
use crate::http::body::OneOrMany;
use crate::observe::Api;
use crate::{AppState, Error, Result};

/// One metric in a `POST /metrics` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricBody {
    metric_name: String,
    value: f64,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    timestamp: Option<JsonTimestamp>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default, alias = "description")]
    help: Option<String>,
}

impl MetricBody {
    pub(crate) fn into_point(self, now_ns: i64, limits: &Limits) -> datanexus_model::Result<Point> {
        let kind = match &self.kind {
            Some(k) => MetricType::parse_lenient(k)?,
            None => MetricType::Untyped,
        };
        SeedSample {
            name: self.metric_name,
            value: self.value,
            kind,
            labels: self.labels,
            timestamp_ns: self.timestamp.map_or(now_ns, |t| t.0),
            help: self.help,
        }
        .into_point(limits)
    }
}

#[derive(Serialize)]
struct Recorded {
    success: bool,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ids: Option<Vec<String>>,
}

/// Handles `POST /metrics`.
pub(crate) async fn record(
    State(state): State<AppState>,
    body: Result<OneOrMany<MetricBody>>,
) -> Result<Response> {
    let outcome = record_points(&state, body).await;
    let (one, ids) = state.observe_ingest(Api::HttpMetrics, outcome, |(_, ids)| ids.len())?;
    let reply = if one {
        let id = ids
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("broker returned no record id".into()))?;
        Recorded {
            success: true,
            message: "metric recorded".into(),
            id: Some(id),
            ids: None,
        }
    } else {
        Recorded {
            success: true,
            message: format!("recorded {} metrics", ids.len()),
            id: None,
            ids: Some(ids),
        }
    };
    Ok(Json(reply).into_response())
}

/// Converts and appends the body; returns whether it was one metric, and the ids.
async fn record_points(
    state: &AppState,
    body: Result<OneOrMany<MetricBody>>,
) -> Result<(bool, Vec<String>)> {
    let options = state.options();
    let now_ns = time::now_ns();
    match body? {
        OneOrMany::One(m) => {
            let point = m.into_point(now_ns, &options.limits)?;
            let ids = state
                .ingestor()
                .points(std::slice::from_ref(&point))
                .await?;
            Ok((true, ids))
        }
        OneOrMany::Many(items) => {
            check_batch_len(items.len(), options.max_batch_metrics, "metrics")?;
            let points = convert_batch(items, "metrics", now_ns, |m, now_ns| {
                m.into_point(now_ns, &options.limits)
            })?;
            Ok((false, state.ingestor().points(&points).await?))
        }
    }
}
