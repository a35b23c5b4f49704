//! `POST /write` (InfluxDB 1.x) and `POST /api/v2/write` (InfluxDB 2.x): InfluxDB line
//! protocol, parsed by [`datanexus_model::lineproto`].
//!
//! - Body: line protocol as text, whatever the content type; `Content-Encoding: gzip`
//!   is decompressed by the gzip layer, and `max_http_body_bytes` caps the
//!   decompressed size (`413`).
//! - Query parameters: `precision` of the timestamps, `ns` (default, also `n`), `us`
//!   (also `u`), `ms` or `s`; anything else is `400`. `db`, `rp`, `u`, `p` (1.x) and
//!   `bucket`, `org` (2.x) are accepted and ignored: every point goes to the metrics
//!   topic.
//! - Replies `204 No Content` once every point is durable. The first bad line rejects
//!   the whole body with `400 {"error": "line 3: ..."}` and nothing is written. A
//!   body with more than `max_batch_metrics` lines is `400` naming the limit. A body
//!   without points (empty, blank or only comments) is `204` with nothing written,
//!   as InfluxDB does.
//! - Each field of a line is kept in one point; queries and the exposition name field
//!   `f` of measurement `m` as `m_f`, and the field `value` as plain `m`.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use datanexus_model::lineproto::Precision;

use datanexus_model::time;

use crate::http::body::read_body;
use crate::http::params::Params;
use crate::observe::Api;
use crate::{AppState, Error, Result};

/// Handles `POST /write` and `POST /api/v2/write`.
pub(crate) async fn write(
    State(state): State<AppState>,
    params: Result<Params>,
    request: Request,
) -> Result<Response> {
    let outcome = write_points(&state, params, request).await;
    state.observe_ingest(Api::HttpWrite, outcome, |written| *written)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Parses and appends the body; returns the number of points written.
async fn write_points(state: &AppState, params: Result<Params>, request: Request) -> Result<usize> {
    let precision = precision(&mut params?)?;
    let options = state.options();
    let body = read_body(request, options.max_http_body_bytes).await?;
    let points = datanexus_ingest::endpoint::POST_WRITE(
        &body,
        precision,
        &options.limits,
        options.max_batch_metrics,
        time::now_ns(),
    )?;
    if points.is_empty() {
        return Ok(0);
    }
    state.ingestor().points(&points).await?;
    Ok(points.len())
}

/// The `precision` parameter (nanoseconds when absent or empty).
fn precision(params: &mut Params) -> Result<Precision> {
    match params.string("precision")? {
        None => Ok(Precision::Nanoseconds),
        Some(text) if text.is_empty() => Ok(Precision::Nanoseconds),
        Some(text) => Precision::parse(&text).ok_or_else(|| {
            Error::Invalid(format!(
                "invalid parameter precision={text:?}: expected ns, n, us, u, ms or s"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &[(&str, &str)]) -> Params {
        Params::new(
            query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn precision_defaults_to_nanoseconds_and_accepts_influx_names() {
        assert_eq!(
            precision(&mut params(&[("db", "x")])).unwrap(),
            Precision::Nanoseconds
        );
        assert_eq!(
            precision(&mut params(&[("precision", "")])).unwrap(),
            Precision::Nanoseconds
        );
        assert_eq!(
            precision(&mut params(&[("precision", "u")])).unwrap(),
            Precision::Microseconds
        );
        assert_eq!(
            precision(&mut params(&[("precision", "s")])).unwrap(),
            Precision::Seconds
        );
        let e = precision(&mut params(&[("precision", "h")])).unwrap_err();
        assert!(e.to_string().contains("precision=\"h\""), "{e}");
    }
}
