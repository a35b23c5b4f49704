//! `datanexus export`: one export job run in this process (the same jobs as the
//! server's `POST /exports`), with a progress bar on stderr and a final table on
//! stdout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use datanexus_export::{
    ConnectionSpec, Connections, DatasetRef, DbType, ExportOptions, ExportRequest, Exports,
    FileFormat, JobState, JobStatus, KafkaTarget, MessageFormat, Target,
};
use datanexus_model::time;

use crate::bench::report::progress;
use crate::cli::ExportArgs;

/// The environment variable holding the password of a URL connection.
const PASSWORD_VAR: &str = "DATANEXUS_EXPORT_PASSWORD";

pub(crate) async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let spec = connection(&args).await?;
    let (target, file) = target(&args)?;
    // A file is written where it is asked for: the job's directory is next to it, so
    // the finished file is renamed into place.
    let work_dir = match &file {
        Some(path) => {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            Some(
                tempfile::Builder::new()
                    .prefix(".datanexus-export-")
                    .tempdir_in(parent)
                    .with_context(|| format!("cannot write in {}", parent.display()))?,
            )
        }
        None => None,
    };
    let options = ExportOptions {
        dir: work_dir.as_ref().map(|d| d.path().to_path_buf()),
        divided_jobs: args.divided_jobs.max(1),
        worker_num: args.workers.max(1),
        retries: args.retries,
        ..ExportOptions::default()
    };
    let exports = Arc::new(Exports::new(options, None));
    let request = ExportRequest {
        connection_id: spec.connection_id.clone(),
        dataset: DatasetRef {
            table: args.table.clone(),
            database: args.database.clone(),
            time_column: args.time_column.clone(),
        },
        start_ns: args.start.as_deref().map(parse_time).transpose()?,
        end_ns: args.end.as_deref().map(parse_time).transpose()?,
        target,
    };
    let started = exports.start(&spec, request).await?;
    let bar = progress(started.chunks as u64, "chunks");
    bar.set_message("exporting");
    let id = started.job_id.clone();
    let stopper = {
        let exports = Arc::clone(&exports);
        let id = id.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = exports.cancel(&id);
            }
        })
    };
    let status = loop {
        let status = exports.get(&id)?;
        bar.set_position(status.chunks_done as u64);
        bar.set_message(format!("{} rows", status.rows));
        if status.state != JobState::Running {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stopper.abort();
    bar.finish_and_clear();
    print!("{}", table(&status));
    match status.state {
        JobState::Succeeded => {}
        JobState::Failed => bail!(
            "export failed: {}",
            status.error.unwrap_or_else(|| "unknown cause".to_owned())
        ),
        JobState::Cancelled => bail!("export cancelled"),
        JobState::Running => bail!("export still running"),
    }
    if let Some(path) = file {
        let (written, _) = exports.file(&id)?;
        std::fs::rename(&written, &path)
            .with_context(|| format!("cannot move the file to {}", path.display()))?;
        println!("file: {}", path.display());
    }
    Ok(())
}

/// The connection: a registered id, or one made from a URL.
async fn connection(args: &ExportArgs) -> anyhow::Result<ConnectionSpec> {
    let c = &args.connection;
    if !c.contains("://") {
        let registry = Connections::open(Some(args.data_dir.join("connections.json")))?;
        return Ok(registry.get(c).await?);
    }
    let db_type = if c.starts_with("postgres://") || c.starts_with("postgresql://") {
        DbType::Postgres
    } else if c.starts_with("http://") {
        DbType::Influx
    } else {
        bail!("--connection {c:?}: expected a registered id, postgres://… or http://… (InfluxDB)");
    };
    let mut spec = ConnectionSpec::new("cli", db_type, c.clone());
    spec.username = args.username.clone();
    spec.password = std::env::var(PASSWORD_VAR).ok().filter(|p| !p.is_empty());
    spec.database = args.database.clone();
    Ok(spec.validated()?)
}

/// The target of `--to` and the file path, when it is a file.
fn target(args: &ExportArgs) -> anyhow::Result<(Target, Option<PathBuf>)> {
    if args.to.starts_with("kafka://") {
        let format = MessageFormat::parse(args.format.as_deref().unwrap_or("json"))?;
        return Ok((
            Target::Kafka(KafkaTarget::parse_url(&args.to, format)?),
            None,
        ));
    }
    let path = PathBuf::from(&args.to);
    let format = match &args.format {
        Some(f) => f.clone(),
        None => path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .with_context(|| {
                format!(
                    "--to {}: give the file an extension (.parquet, .csv, .ndjson) or --format",
                    args.to
                )
            })?,
    };
    Ok((Target::File(FileFormat::parse(&format)?), Some(path)))
}

fn parse_time(s: &str) -> anyhow::Result<i64> {
    time::parse(s).with_context(|| format!("invalid time {s:?}: expected RFC 3339 or Unix seconds"))
}

/// The final table: what was exported, how fast, and where it went.
fn table(s: &JobStatus) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("job", s.job_id.clone()),
        ("state", format!("{:?}", s.state).to_lowercase()),
        ("dataset", s.table.clone()),
        (
            "range",
            format!(
                "{} .. {}",
                s.start.as_deref().unwrap_or("-"),
                s.end.as_deref().unwrap_or("-")
            ),
        ),
        ("chunks", format!("{}/{}", s.chunks_done, s.chunks)),
        ("rows", s.rows.to_string()),
        ("bytes", s.bytes.to_string()),
        ("seconds", format!("{:.2}", s.elapsed_seconds)),
        ("rows/s", format!("{:.0}", s.rows_per_second)),
        ("format", s.format.to_owned()),
    ];
    if let Some(topic) = &s.topic {
        rows.push(("topic", topic.clone()));
    }
    for p in &s.partitions {
        rows.push((
            "partition",
            format!(
                "{}: offsets {}..={} ({} records)",
                p.partition, p.first_offset, p.last_offset, p.records
            ),
        ));
    }
    if let Some(e) = &s.error {
        rows.push(("error", e.clone()));
    }
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<10} {v}\n"));
    }
    out
}
