//! `datanexus`: receive, queue durably, process, store and serve metrics and events.
//!
//! # Layout
//! - `cli`: the command line (clap).
//! - `serve`: `datanexus serve`, wiring config → broker → servers → shutdown.
//! - `consume`: `datanexus consume`, reading a topic of the embedded log back.
//! - `export`: `datanexus export`, an export job run in this process.
//! - `export_consume`: `datanexus export-consume` (feature `kafka`), the seed's
//!   consumer client.
//! - `bench`: `datanexus bench`, a load generator.
//! - `client`: `datanexus client`, sample gRPC clients.
//! - `logging`: tracing subscriber set-up.
//! - `tools`: `healthcheck`, `completions` and the man page.

/// mimalloc instead of glibc's malloc: ingest allocates and frees many small buffers
/// per record, and glibc's allocator was ~28 % of the server's CPU time under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod cli;
mod client;
mod consume;
mod control;
mod export;
#[cfg(feature = "kafka")]
mod export_consume;
mod logging;
mod serve;
mod tools;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            cli::Command::Serve(args) => serve::run(*args).await,
            cli::Command::Consume(args) => consume::run(args).await,
            cli::Command::Bench(args) => bench::run(args).await,
            cli::Command::Client(command) => client::run(command).await,
            cli::Command::Control(cli::ControlCommand::Rebalance(args)) => {
                control::rebalance(args).await
            }
            cli::Command::Export(args) => export::run(*args).await,
            #[cfg(feature = "kafka")]
            cli::Command::ExportConsume(args) => export_consume::run(args).await,
            cli::Command::Healthcheck(args) => tools::healthcheck(args).await,
            cli::Command::Completions(args) => tools::completions(args.shell),
            cli::Command::Manpage => tools::manpage(),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
