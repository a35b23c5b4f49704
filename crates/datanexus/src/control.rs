//! `datanexus control rebalance`: moves the old data of series whose owner changed to
//! their owners (`ClusterStore::rebalance`), with a progress bar on stderr and a final
//! table on stdout.

use std::time::Instant;

use anyhow::Context;
use datanexus_store_cluster::rebalance::Progress;
use datanexus_store_cluster::{ClusterOptions, ClusterStore};

use crate::cli::RebalanceArgs;

/// The variable holding the token sent to the nodes (never a flag: it would show in
/// `ps`).
const TOKEN_VAR: &str = "DATANEXUS_CONTROL__TOKEN";

pub(crate) async fn rebalance(args: RebalanceArgs) -> anyhow::Result<()> {
    let store = ClusterStore::new(ClusterOptions {
        nodes: args.nodes.clone(),
        token: std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty()),
        timeout: args.timeout,
    })
    .context("invalid --nodes")?;
    let started = Instant::now();
    let bar = crate::bench::report::progress(0, "series");
    bar.set_message("listing the nodes' series");
    let report = store
        .rebalance(|step| match step {
            Progress::Planned { misplaced } => {
                bar.set_length(*misplaced);
                bar.set_message("moving");
            }
            Progress::Moved { .. } => bar.inc(1),
        })
        .await;
    bar.finish_and_clear();
    let report = report.context("rebalance stopped (what was moved stays moved; run it again)")?;
    let rows = [
        ("nodes", args.nodes.len().to_string()),
        ("series", report.series.to_string()),
        ("misplaced", report.misplaced.to_string()),
        ("moved", report.moved.to_string()),
        ("samples copied", report.samples_copied.to_string()),
        ("samples deleted", report.samples_deleted.to_string()),
        ("seconds", format!("{:.2}", started.elapsed().as_secs_f64())),
    ];
    for (name, value) in rows {
        println!("{name:<16} {value}");
    }
    Ok(())
}
