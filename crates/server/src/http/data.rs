//! `GET /data` (the data-flow-engine seed): stored events, oldest first (newest last).
//!
//! Parameters: `source_id` (only this source), `start_time`, `end_time` (RFC 3339 or
//! Unix seconds, inclusive), `limit` (default 100, max 10 000), `offset` (default 0).
//! Reply: `{"total", "limit", "offset", "data": [{"id", "sourceId", "timestamp",
//! "payload"}]}` — `total` counts the events matching before paging, `timestamp` is
//! RFC 3339 UTC, `id` is the event's broker record id (as returned by `POST /ingest`).

use axum::Json;
use axum::extract::State;
use datanexus_model::time;
use datanexus_store::{EventPage, EventQuery};
use serde_json::{Value, json};

use crate::http::params::Params;
use crate::{AppState, Result};

/// Default `limit`.
pub(crate) const DEFAULT_EVENTS: usize = 100;
/// Largest `limit`.
pub(crate) const MAX_EVENTS: usize = 10_000;

/// Handles `GET /data`.
pub(crate) async fn events(
    State(state): State<AppState>,
    params: Result<Params>,
) -> Result<Json<Value>> {
    let query = event_query(params?)?;
    let page = state.store()?.events(&query).await?;
    Ok(Json(page_json(&query, &page)))
}

fn event_query(mut params: Params) -> Result<EventQuery> {
    let query = EventQuery {
        source_id: params.string("source_id")?,
        range: params.range("start_time", "end_time")?,
        limit: params.count("limit", DEFAULT_EVENTS, MAX_EVENTS)?,
        offset: params.count("offset", 0, usize::MAX)?,
    };
    params.finish()?;
    Ok(query)
}

fn page_json(query: &EventQuery, page: &EventPage) -> Value {
    let data: Vec<Value> = page
        .events
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "sourceId": e.source_id,
                "timestamp": time::format_rfc3339(e.timestamp_ns),
                "payload": e.payload,
            })
        })
        .collect();
    json!({
        "total": page.total,
        "limit": query.limit,
        "offset": query.offset,
        "data": data,
    })
}

#[cfg(test)]
mod tests {
    use datanexus_store::StoredEvent;

    use super::*;

    fn params(query: &[(&str, &str)]) -> Params {
        Params::from_pairs(query)
    }

    #[test]
    fn parameters_have_defaults_and_a_maximum_limit() {
        let q = event_query(params(&[])).unwrap();
        assert_eq!(
            q,
            EventQuery {
                limit: 100,
                ..EventQuery::default()
            }
        );
        let q = event_query(params(&[
            ("source_id", "s1"),
            ("start_time", "10"),
            ("end_time", "2030-01-01T00:00:00Z"),
            ("limit", "5"),
            ("offset", "1"),
        ]))
        .unwrap();
        assert_eq!(q.source_id.as_deref(), Some("s1"));
        assert_eq!(q.range.start_ns, Some(10_000_000_000));
        assert_eq!((q.limit, q.offset), (5, 1));
        let e = event_query(params(&[("limit", "10001")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("limit=\"10001\""), "{e}");
        let e = event_query(params(&[("sourceId", "s1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown parameter"), "{e}");
    }

    #[test]
    fn events_are_rendered_with_camel_case_source_and_rfc3339_time() {
        let payload = json!({"t": 1.5}).as_object().cloned().unwrap();
        let page = EventPage {
            total: 3,
            events: vec![StoredEvent {
                id: "p0-4".into(),
                source_id: "s1".into(),
                timestamp_ns: 1_500_000_000,
                payload,
            }],
        };
        let query = EventQuery {
            limit: 1,
            offset: 2,
            ..EventQuery::default()
        };
        assert_eq!(
            page_json(&query, &page),
            json!({"total": 3, "limit": 1, "offset": 2, "data": [
                {"id": "p0-4", "sourceId": "s1", "timestamp": "1970-01-01T00:00:01.500Z",
                 "payload": {"t": 1.5}}
            ]})
        );
    }
}
