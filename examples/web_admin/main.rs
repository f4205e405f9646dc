//! `web_admin`: the manager's Owner Access screens and the owner's registration page,
//! in a browser, over the SQLite repository and an outbox folder (or SMTP).
//!
//! ```sh
//! cargo run --example web_admin --all-features
//! ```
//!
//! It prints the address (always on 127.0.0.1) and the admin password, which is
//! `OWNER_ACCESS_ADMIN_PASSWORD` when that is set and a fresh random one otherwise. On
//! first start (an empty database) it loads a demo community of 300 owners.
//!
//! Every screen is a thin layer over the library's public API: the handlers read a
//! form, call one or two `OwnerAccess` methods and render what they return. No rule of
//! the workflow (who is eligible, what may be sent, when a link works) lives here.

mod app;
mod auth;
mod compose;
mod demo;
mod manage;
mod owner_page;
mod sending;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use owner_access::adapters::smtp::{SmtpSettings, SmtpTransport};
use owner_access::adapters::sqlite::SqliteRepository;
use owner_access::invite::AttachmentLimits;
use owner_access::{FileOutbox, MailTransport, OwnerAccess};
use tracing_subscriber::EnvFilter;

/// The variable the admin password is read from.
const PASSWORD_VAR: &str = "OWNER_ACCESS_ADMIN_PASSWORD";

#[derive(Parser)]
#[command(
    name = "web_admin",
    about = "The Owner Access screens in a browser, on 127.0.0.1"
)]
struct Args {
    /// The SQLite file (created on first start, with a demo community).
    #[arg(long, default_value = "web_admin.db", value_name = "FILE")]
    db: PathBuf,
    /// Write each message as an .eml file into this folder (the default).
    #[arg(long, default_value = "web_admin_outbox", value_name = "DIR")]
    outbox: PathBuf,
    /// Send through this SMTP server instead (`smtp://host:port`).
    #[arg(long, value_name = "URL")]
    smtp: Option<String>,
    /// The port on 127.0.0.1 (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The largest attachment, in KiB (the library's limit; the total may be 2.5 times it).
    #[arg(long, default_value_t = 10 * 1024, value_name = "KIB")]
    max_attachment_kib: usize,
    /// How many owners the demo community has.
    #[arg(long, default_value_t = 300, value_name = "N")]
    demo_owners: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The library's log events on stderr, at RUST_LOG's levels (`warn` when unset).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let repo = Arc::new(SqliteRepository::open(&args.db).await?);
    let loaded = demo::load_if_empty(repo.as_ref(), args.demo_owners).await?;

    // Only loopback: an admin screen is not put on the network by an example.
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port))).await?;
    let address = listener.local_addr()?;
    let base = format!("http://{address}");

    let transport: Arc<dyn MailTransport> = match &args.smtp {
        Some(url) => Arc::new(SmtpTransport::new(SmtpSettings::from_url(url)?)?),
        None => Arc::new(FileOutbox::new(&args.outbox)?),
    };
    let max_each = args.max_attachment_kib.saturating_mul(1024);
    let limits = AttachmentLimits {
        max_each,
        max_total: max_each.saturating_mul(5) / 2,
    };
    let service = OwnerAccess::builder(repo, transport)
        .sender("Owner Portal <no-reply@portal.example.org>")
        .portal_url(format!("{base}/register"))
        .attachment_limits(limits)
        .build()?;

    let (password, chosen) = match std::env::var(PASSWORD_VAR) {
        Ok(p) if !p.is_empty() => (p, true),
        _ => (auth::random_token(12), false),
    };
    let state = app::AppState::new(service, password.clone(), limits);
    let router = app::router(state);

    let mut out = std::io::stdout().lock();
    writeln!(out, "web admin: {base}/")?;
    if chosen {
        writeln!(out, "admin password: from {PASSWORD_VAR}")?;
    } else {
        writeln!(
            out,
            "admin password: {password} (set {PASSWORD_VAR} to choose one)"
        )?;
    }
    if let Some(count) = loaded {
        writeln!(out, "loaded the demo community: {count} owners")?;
    }
    match &args.smtp {
        Some(url) => writeln!(out, "mail: SMTP {url}")?,
        None => writeln!(out, "mail: .eml files in {}", args.outbox.display())?,
    }
    out.flush()?;
    drop(out);

    axum::serve(listener, router).await?;
    Ok(())
}
