//! Ingest-to-queryable: poll `GET /metrics/{name}/aggregate?label.run=<run>` until its
//! `count` reaches the number of acknowledged samples of the run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::ProgressBar;

use super::http::{Conn, Endpoint};
use super::report::{Queryable, Report};

/// Pause between two count queries.
const POLL: Duration = Duration::from_millis(20);

/// What to count and how long to wait.
pub(crate) struct Check<'a> {
    pub(crate) http_addr: SocketAddr,
    pub(crate) metric: &'a str,
    pub(crate) run: &'a str,
    pub(crate) timeout: Duration,
}

/// Waits until all `report.acknowledged` samples are queryable and records the time
/// since `started` (the first request) in `report`; a failure is recorded in
/// `report.verify_error`.
pub(crate) async fn queryable(check: &Check<'_>, started: Instant, report: &mut Report) {
    let expected = report.acknowledged;
    match wait(check, expected, started).await {
        Ok(seconds) => {
            report.queryable = Some(Queryable {
                samples: expected,
                seconds,
                per_s: expected as f64 / seconds,
            });
        }
        Err(e) => report.verify_error = Some(format!("{e:#}")),
    }
}

async fn wait(check: &Check<'_>, expected: u64, started: Instant) -> anyhow::Result<f64> {
    let endpoint = Endpoint::get(
        check.http_addr,
        format!(
            "/metrics/{}/aggregate?label.run={}",
            check.metric, check.run
        ),
    );
    let bar = ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(200));
    let deadline = Instant::now() + check.timeout;
    let mut conn = Conn::connect(check.http_addr).await?;
    let mut count = 0;
    let mut last_error = None;
    let outcome = loop {
        match count_of(&mut conn, &endpoint).await {
            Ok(n) => count = n,
            Err(e) => {
                last_error = Some(format!("{e:#}"));
                conn = Conn::connect(check.http_addr).await?;
            }
        }
        bar.set_message(format!(
            "waiting until all are queryable: {count} of {expected}"
        ));
        if count >= expected {
            break Ok(started.elapsed().as_secs_f64());
        }
        if Instant::now() >= deadline {
            let why = last_error.map(|e| format!(" (last count query: {e})"));
            break Err(anyhow::anyhow!(
                "only {count} of {expected} samples queryable after {}{}",
                humantime::format_duration(check.timeout),
                why.unwrap_or_default()
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    outcome
}

/// The `count` of an aggregate answer; 0 for `404` (nothing stored yet).
async fn count_of(conn: &mut Conn, endpoint: &Endpoint) -> anyhow::Result<u64> {
    let (status, body) = conn.send(endpoint, Bytes::new()).await?;
    if status == hyper::StatusCode::NOT_FOUND {
        return Ok(0);
    }
    anyhow::ensure!(
        status.is_success(),
        "{}",
        super::http::describe_failure(status, &body)
    );
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v["count"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no count in the answer"))
}
