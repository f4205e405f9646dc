//! `owner_access`: the Owner Access workflow from a terminal, over SQLite and SMTP.
//!
//! ```sh
//! cargo run --release --all-features --example owner_access -- --db state.db import --communities c.csv --owners o.csv
//! cargo run --release --all-features --example owner_access -- --db state.db send --community maple --outbox ./outbox
//! ```
//!
//! Exit status: 0 done; 1 bad input or usage, nothing sent; 2 some deliveries failed;
//! 3 the batch stopped with deliveries still pending (server unreachable, refused, or
//! interrupted). When 2 and 3 both apply, 3.

/// glibc's malloc keeps what one thread freed in that thread's arena: the SQLite
/// reads of a 100,000-owner review run on blocking threads, and their freed memory
/// was not reused by the next read, so resident memory grew to twice the heap's peak.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod app;
mod args;
mod compose;
mod failure;
mod input;
mod links;
mod output;
mod owners;
mod progress;
mod send;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use app::App;
use args::{Cli, Command, DraftCommand};
use failure::Failure;

/// Reads the flags, runs the command on a runtime, and exits with its status.
fn main() -> ExitCode {
    install_logs();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(usage) => return usage_exit(&usage),
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(status) => ExitCode::from(status),
        Err(failure) => {
            eprintln!("error: {}", output::shown(&failure.message));
            ExitCode::from(failure.status)
        }
    }
}

/// The library's log events on stderr, at the levels `RUST_LOG` names (`warn` when it
/// is unset, so the command's own output reads as it always did); see the README's
/// "Logs".
fn install_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Help and version exit 0; a usage error exits 1, with clap's message.
fn usage_exit(usage: &clap::Error) -> ExitCode {
    let informational = matches!(
        usage.kind(),
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
    );
    let _ = usage.print();
    ExitCode::from(if informational { 0 } else { 1 })
}

/// One thread drives the sockets and the send engine together; SQLite runs on the
/// blocking pool. From `block_on` on a multi-threaded runtime, every socket event was
/// handed from a worker thread to the main thread, which made the send 15% slower
/// (benches/e2e/run.sh).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Opens the state, then runs the one command given: each is a method of [`App`], in
/// the file of its group (`owners`, `compose`, `send`, `links`).
async fn run(cli: Cli) -> Result<u8, Failure> {
    let app = App::open(cli.db).await?;
    match cli.command {
        Command::Import {
            communities,
            owners,
        } => app.import(communities.as_deref(), owners.as_deref()).await,
        Command::Roster {
            community,
            access,
            email,
            search,
            json,
        } => app.roster(&community, access, email, search, json).await,
        Command::MassEdit { edits } => app.mass_edit(&edits).await,
        Command::Activity {
            community,
            limit,
            json,
        } => app.activity(&community, limit, json).await,
        Command::Review {
            community,
            select,
            message,
            json,
        } => app.review(&community, &select, &message, json).await,
        Command::Draft(DraftCommand::Save {
            community,
            select,
            message,
        }) => app.save_draft(&community, &select, &message).await,
        Command::Draft(DraftCommand::List { community, json }) => {
            app.list_drafts(&community, json).await
        }
        Command::Draft(DraftCommand::Discard { id }) => app.discard_draft(&id).await,
        Command::Send {
            community,
            select,
            message,
            transport,
            json,
        } => {
            app.send(&community, &select, &message, &transport, json)
                .await
        }
        Command::Draft(DraftCommand::Send {
            id,
            transport,
            json,
        }) => app.send_draft(&id, &transport, json).await,
        Command::Resend {
            owner,
            message,
            transport,
            json,
        } => app.resend(&owner, &message, &transport, json).await,
        Command::Resume {
            batch,
            take_over,
            transport,
            json,
        } => app.resume(&batch, take_over, &transport, json).await,
        Command::Retry {
            batch,
            transport,
            json,
        } => app.retry(&batch, &transport, json).await,
        Command::Verify { token } => app.verify(&token).await,
        Command::Redeem { token } => app.redeem(&token).await,
    }
}
