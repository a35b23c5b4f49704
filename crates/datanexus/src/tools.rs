//! Small commands for packaging and operations: `healthcheck`, `completions`, and the
//! man page (`manpage`, hidden; the Debian package ships its output).

use std::io::Write;

use anyhow::Context;
use bytes::Bytes;
use clap::CommandFactory;
use hyper::header::{AUTHORIZATION, HeaderValue};

use crate::bench::http::{Conn, Endpoint};
use crate::cli::{Cli, HealthcheckArgs};

/// `GET /health` (or `/ready`) on the server; an error unless it answers 200.
pub(crate) async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
    let path = if args.ready { "/ready" } else { "/health" };
    let mut endpoint = Endpoint::get(args.http_addr, path);
    let token = args.token.or_else(|| {
        std::env::var("DATANEXUS_AUTH_TOKENS").ok().and_then(|t| {
            t.split(',')
                .map(str::trim)
                .find(|t| !t.is_empty())
                .map(str::to_owned)
        })
    });
    if let Some(token) = token.filter(|_| args.ready) {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not a valid header value")?;
        endpoint.headers.push((AUTHORIZATION, value));
    }
    let url = format!("http://{}{path}", args.http_addr);
    let check = async {
        let mut conn = Conn::connect(args.http_addr).await?;
        let (status, body) = conn.send(&endpoint, Bytes::new()).await?;
        anyhow::ensure!(
            status.is_success(),
            "GET {url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    };
    tokio::time::timeout(args.timeout, check)
        .await
        .with_context(|| format!("no answer from {url} within {:?}", args.timeout))?
}

/// Writes the completion script of `shell` to stdout.
pub(crate) fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "datanexus", &mut std::io::stdout());
    Ok(())
}

/// Writes the man page (roff) to stdout; its SUBCOMMANDS section lists every command
/// (each one's flags: `datanexus help <command>`).
pub(crate) fn manpage() -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    std::io::stdout().write_all(&out)?;
    Ok(())
}
