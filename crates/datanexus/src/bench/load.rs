//! The HTTP load loop shared by the HTTP workloads: `clients` connections take the
//! next prepared request body from a shared cursor until all were sent or the deadline
//! passed, timing each request and counting non-2xx answers and transport errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use super::http::{Conn, Endpoint, describe_failure};
use super::payload::Body;
use super::report::{latency_histogram, record};

/// What a run sends.
pub(crate) struct Plan {
    pub(crate) endpoint: Endpoint,
    /// The bodies, each sent once, in order.
    pub(crate) bodies: Vec<Body>,
    pub(crate) clients: u64,
    /// No request starts after this.
    pub(crate) deadline: Instant,
}

/// What a run did.
pub(crate) struct Outcome {
    pub(crate) hist: Histogram<u64>,
    pub(crate) requests_ok: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// Units (samples, queries) in successful requests.
    pub(crate) acknowledged: u64,
    /// The first successful answer's body.
    pub(crate) first_answer: Option<Bytes>,
    pub(crate) started: Instant,
    pub(crate) seconds: f64,
}

impl Outcome {
    fn empty(started: Instant) -> anyhow::Result<Outcome> {
        Ok(Outcome {
            hist: latency_histogram()?,
            requests_ok: 0,
            errors: 0,
            first_error: None,
            acknowledged: 0,
            first_answer: None,
            started,
            seconds: 0.0,
        })
    }

    fn merge(&mut self, other: Outcome) -> anyhow::Result<()> {
        self.hist.add(&other.hist)?;
        self.requests_ok += other.requests_ok;
        self.errors += other.errors;
        self.acknowledged += other.acknowledged;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        if self.first_answer.is_none() {
            self.first_answer = other.first_answer;
        }
        Ok(())
    }

    fn fail(&mut self, message: String) {
        self.errors += 1;
        self.first_error.get_or_insert(message);
    }
}

/// Runs `plan`, showing progress (in units) on `bar`.
///
/// # Errors
/// No client could connect at all.
pub(crate) async fn run(plan: Plan, bar: &ProgressBar) -> anyhow::Result<Outcome> {
    anyhow::ensure!(plan.clients > 0, "--clients must be > 0");
    let mut conns = Vec::new();
    for _ in 0..plan.clients {
        conns.push(Conn::connect(plan.endpoint.addr).await?);
    }
    let plan = Arc::new(plan);
    let cursor = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            let (plan, cursor, bar) = (plan.clone(), cursor.clone(), bar.clone());
            tokio::spawn(async move { client(conn, &plan, &cursor, &bar, started).await })
        })
        .collect();
    let mut total = Outcome::empty(started)?;
    for task in tasks {
        total.merge(task.await??)?;
    }
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}

async fn client(
    mut conn: Conn,
    plan: &Plan,
    cursor: &AtomicUsize,
    bar: &ProgressBar,
    started: Instant,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome::empty(started)?;
    loop {
        let i = cursor.fetch_add(1, Ordering::Relaxed);
        let Some((body, units)) = plan.bodies.get(i) else {
            break;
        };
        if Instant::now() >= plan.deadline {
            break;
        }
        let t = Instant::now();
        let answer = conn.send(&plan.endpoint, body.clone()).await;
        record(&mut out.hist, t.elapsed());
        bar.inc(*units);
        match answer {
            Ok((status, body)) if status.is_success() => {
                out.requests_ok += 1;
                out.acknowledged += units;
                if out.first_answer.is_none() {
                    out.first_answer = Some(body);
                }
            }
            Ok((status, body)) => {
                out.fail(describe_failure(status, &body));
                bar.set_message(format!("{} errors", out.errors));
            }
            Err(e) => {
                out.fail(format!("{e:#}"));
                bar.set_message(format!("{} errors", out.errors));
                match Conn::connect(plan.endpoint.addr).await {
                    Ok(c) => conn = c,
                    Err(e) => {
                        out.fail(format!("{e:#}"));
                        break;
                    }
                }
            }
        }
    }
    Ok(out)
}
