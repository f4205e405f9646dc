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

mod input;
mod output;
mod progress;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use owner_access::adapters::smtp::{SmtpSettings, SmtpTransport};
use owner_access::adapters::sqlite::SqliteRepository;
use owner_access::domain::{BatchId, CommunityId, DraftId, OwnerId, Page};
use owner_access::eligibility::{AccessFilter, EmailFilter, OwnerFilter};
use owner_access::invite::{Attachment, Invite};
use owner_access::prelude::*;
use owner_access::{
    Clock, Error, FileOutbox, MailTransport, OwnerAccess, Selection, SendOptions, SendReport,
    SystemClock,
};

#[derive(Parser)]
#[command(
    name = "owner_access",
    about = "Invite homeowners to their owner portal, in bulk and safely"
)]
struct Cli {
    /// The SQLite file that holds the state (created on first use).
    #[arg(long, global = true, value_name = "FILE")]
    db: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Upsert communities and owners from CSV files, in one step.
    Import {
        /// `community_id,name,reply_to` (optional: `time_zone,logo_url,accent_color`)
        #[arg(long, value_name = "FILE")]
        communities: Option<PathBuf>,
        /// `community_id,owner_id,property_id,first_name,last_name,property_address,primary_email,registered`
        #[arg(long, value_name = "FILE")]
        owners: Option<PathBuf>,
    },
    /// The Manage screen: owners with status and eligibility.
    Roster {
        #[arg(long)]
        community: String,
        #[arg(long, value_enum, default_value = "all")]
        access: AccessArg,
        #[arg(long, value_enum, default_value = "any")]
        email: EmailArg,
        #[arg(long)]
        search: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change many primary emails at once, all or nothing.
    MassEdit {
        /// `owner_id,primary_email`
        #[arg(long, value_name = "FILE")]
        edits: PathBuf,
    },
    /// Generate & Review: recipients, excluded owners, problems. Sends nothing.
    Review {
        #[arg(long)]
        community: String,
        #[command(flatten)]
        select: SelectArgs,
        #[command(flatten)]
        message: MessageArgs,
        #[arg(long)]
        json: bool,
    },
    /// Review, then send.
    Send {
        #[arg(long)]
        community: String,
        #[command(flatten)]
        select: SelectArgs,
        #[command(flatten)]
        message: MessageArgs,
        #[command(flatten)]
        transport: TransportArgs,
        #[arg(long)]
        json: bool,
    },
    /// Save, list, discard or send drafts.
    #[command(subcommand)]
    Draft(DraftCommand),
    /// Send one owner a fresh link (the old one is revoked).
    Resend {
        #[arg(long)]
        owner: String,
        #[command(flatten)]
        message: MessageArgs,
        #[command(flatten)]
        transport: TransportArgs,
        #[arg(long)]
        json: bool,
    },
    /// Send what is still pending in a batch.
    ///
    /// Deliveries another sender holds are left alone while its lease runs: `resume`
    /// waits, saying on stderr how many and until when, and takes them once the lease
    /// has run out (a crashed sender's within `--lease` of its crash) or follows that
    /// sender until the batch is settled. It ends when the batch is settled (exit 0,
    /// or 2 if some failed) or stops with a reason (exit 3).
    Resume {
        #[arg(long)]
        batch: String,
        /// Take every claim over at once instead of waiting for the leases to run out:
        /// only when the sender holding them is known to be dead. If it is alive, the
        /// messages it has in flight go twice (with the same Message-ID), and it stops
        /// at its next write about the batch.
        #[arg(long)]
        take_over: bool,
        #[command(flatten)]
        transport: TransportArgs,
        #[arg(long)]
        json: bool,
    },
    /// Send again to the owners of a batch whose delivery failed.
    Retry {
        #[arg(long)]
        batch: String,
        #[command(flatten)]
        transport: TransportArgs,
        #[arg(long)]
        json: bool,
    },
    /// Check a registration token without using it.
    Verify {
        /// A token may start with `-` (it is base64url).
        #[arg(long, allow_hyphen_values = true)]
        token: String,
    },
    /// Complete a registration with a token (once).
    Redeem {
        /// A token may start with `-` (it is base64url).
        #[arg(long, allow_hyphen_values = true)]
        token: String,
    },
    /// The community activity feed, newest first.
    Activity {
        #[arg(long)]
        community: String,
        /// How many entries, from 1 to 100000.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DraftCommand {
    /// Save an invitation as a draft; prints the draft id.
    Save {
        #[arg(long)]
        community: String,
        #[command(flatten)]
        select: SelectArgs,
        #[command(flatten)]
        message: MessageArgs,
    },
    /// List a community's drafts.
    List {
        #[arg(long)]
        community: String,
        #[arg(long)]
        json: bool,
    },
    /// Discard a draft.
    Discard { id: String },
    /// Review a draft again and send it.
    Send {
        id: String,
        #[command(flatten)]
        transport: TransportArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum AccessArg {
    Unregistered,
    Invited,
    Registered,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
enum EmailArg {
    With,
    Without,
    Any,
}

#[derive(Args, Clone)]
struct SelectArgs {
    /// `all` (every owner of the community) or `ID,ID,...`.
    #[arg(long, default_value = "all")]
    select: String,
    /// Owners to leave out: `ID,ID,...`.
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
}

#[derive(Args, Clone, Default)]
struct MessageArgs {
    #[arg(long)]
    subject: Option<String>,
    /// Plain-text body template (without --html, the HTML part is made from it).
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// HTML body template (without --text, the text part is made from it).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// A file to attach (repeatable).
    #[arg(long, value_name = "FILE")]
    attach: Vec<PathBuf>,
    #[arg(long, value_name = "ADDR")]
    summary_to: Option<String>,
    #[arg(long, value_name = "ADDR")]
    reply_to: Option<String>,
    /// The From mailbox [default: Owner Portal <no-reply@example.com>; for resend, the
    /// owner's latest batch's].
    #[arg(long, value_name = "ADDR")]
    from: Option<String>,
    /// The portal's registration page [default: http://localhost:8080/register; for
    /// resend, the owner's latest batch's].
    #[arg(long, value_name = "URL")]
    portal_url: Option<String>,
}

/// The From of an invite no --from was given for.
const DEFAULT_FROM: &str = "Owner Portal <no-reply@example.com>";
/// The portal URL of an invite no --portal-url was given for.
const DEFAULT_PORTAL_URL: &str = "http://localhost:8080/register";

impl MessageArgs {
    fn given(&self) -> bool {
        self.subject.is_some()
            || self.text.is_some()
            || self.html.is_some()
            || !self.attach.is_empty()
            || self.summary_to.is_some()
            || self.reply_to.is_some()
            || self.from.is_some()
            || self.portal_url.is_some()
    }
}

#[derive(Args, Clone)]
struct TransportArgs {
    /// `smtp://host:port`, `smtp://host:port?starttls=required` or `smtps://host:port`.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "outbox",
        required_unless_present = "outbox"
    )]
    smtp: Option<String>,
    #[arg(long, value_name = "USER", requires = "smtp")]
    smtp_user: Option<String>,
    /// The environment variable that holds the SMTP password.
    #[arg(long, value_name = "VAR", requires = "smtp")]
    smtp_password_env: Option<String>,
    /// Accept self-signed certificates (for tests only).
    #[arg(long, requires = "smtp")]
    insecure_tls: bool,
    /// Write one .eml file per message into DIR instead of sending.
    #[arg(long, value_name = "DIR")]
    outbox: Option<PathBuf>,
    /// Messages in flight at once (and SMTP connections).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,
    /// At most this many messages per second, from 1/3600 (0.000278, one an hour) to
    /// 1000000.
    #[arg(long)]
    rate: Option<f64>,
    /// How long a claim on a delivery lasts unless this run renews it, in seconds
    /// (default 20, from 0.1): after a crash, its deliveries wait this long before
    /// another run takes them.
    #[arg(long, value_name = "SECONDS")]
    lease: Option<f64>,
}

/// Owners handed to the store at once during an import: a few MB, so the import's
/// memory does not grow with the file.
const IMPORT_CHUNK: usize = 4096;

/// A failure, as one sentence, with its exit status.
struct Failure {
    message: String,
    status: u8,
}

impl Failure {
    fn input(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            status: 1,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let message = match &e {
            Error::InvalidInvite { problems } => format!(
                "the invitation cannot be sent: {}",
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Error::MassEditRejected { problems } => {
                let rows: Vec<String> = problems.iter().map(mass_edit_row).collect();
                format!(
                    "the mass edit was rejected, nothing changed: {}",
                    rows.join("; ")
                )
            }
            other => with_causes(other),
        };
        Failure::input(message)
    }
}

/// An error and its causes on one line, `error: cause: its cause`, so a full disk or a
/// held lock says so (a cause already in the line is not repeated).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        next = cause.source();
    }
    line
}

impl From<input::InputError> for Failure {
    fn from(e: input::InputError) -> Self {
        Failure::input(e.0)
    }
}

fn mass_edit_row(p: &owner_access::error::MassEditProblem) -> String {
    use owner_access::error::MassEditProblem as P;
    match p {
        P::UnknownOwner { owner } => format!("owner `{owner}` is unknown"),
        P::InvalidEmail {
            owner,
            email,
            error,
        } => format!("owner `{owner}`: `{email}` is not valid ({error})"),
        P::SharedEmail { owner, email, with } => format!(
            "owner `{owner}`: `{email}` would be shared with {}",
            with.iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        P::DuplicateRow { owner } => format!("owner `{owner}` appears twice"),
        _ => format!("{p:?}"),
    }
}

fn id<T: std::str::FromStr<Err = owner_access::domain::InvalidId>>(
    what: &str,
    raw: &str,
) -> Result<T, Failure> {
    raw.parse()
        .map_err(|e| Failure::input(format!("--{what} `{raw}`: {e}")))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let informational = matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            );
            let _ = e.print();
            return ExitCode::from(if informational { 0 } else { 1 });
        }
    };
    // One thread drives the sockets and the send engine together; SQLite runs on the
    // blocking pool. From `block_on` on a multi-threaded runtime, every socket event
    // was handed from a worker thread to the main thread, which made the send 15%
    // slower (benches/e2e/run.sh).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
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

async fn run(cli: Cli) -> Result<u8, Failure> {
    let db = cli
        .db
        .ok_or_else(|| Failure::input("--db FILE is required"))?;
    let repo = SqliteRepository::open(&db).await.map_err(|e| {
        Failure::input(format!(
            "cannot open the database {}: {}",
            db.display(),
            with_causes(&e)
        ))
    })?;
    let repo: Arc<dyn OwnerStorage> = Arc::new(repo);
    let app = App { repo };
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
        Command::Review {
            community,
            select,
            message,
            json,
        } => app.review(&community, &select, &message, json).await,
        Command::Send {
            community,
            select,
            message,
            transport,
            json,
        } => {
            let service = app.service(&message, &transport).await?;
            let invite = app.invite(&service, &community, &select, &message).await?;
            review_and_send(&service, &invite, json).await
        }
        Command::Draft(DraftCommand::Save {
            community,
            select,
            message,
        }) => {
            let service = app.service_without_transport(&message)?;
            let invite = app.invite(&service, &community, &select, &message).await?;
            let id = service.save_draft(&invite).await?;
            println!("{}", output::shown(id.as_str()));
            Ok(0)
        }
        Command::Draft(DraftCommand::List { community, json }) => {
            let community: CommunityId = id("community", &community)?;
            let service = app.service_without_transport(&MessageArgs::defaults())?;
            let drafts = service.drafts(&community).await?;
            print_out(
                json,
                output::drafts_json(&drafts),
                output::drafts_text(&drafts),
            );
            Ok(0)
        }
        Command::Draft(DraftCommand::Discard { id: draft }) => {
            let draft: DraftId = id("draft", &draft)?;
            let service = app.service_without_transport(&MessageArgs::defaults())?;
            service.discard_draft(&draft).await?;
            println!("discarded {}", output::shown(draft.as_str()));
            Ok(0)
        }
        Command::Draft(DraftCommand::Send {
            id: draft,
            transport,
            json,
        }) => {
            let draft: DraftId = id("draft", &draft)?;
            let service = app.service(&MessageArgs::defaults(), &transport).await?;
            let invite = service.load_draft(&draft).await?;
            review_and_send(&service, &invite, json).await
        }
        Command::Resend {
            owner,
            message,
            transport,
            json,
        } => {
            let owner: OwnerId = id("owner", &owner)?;
            let service = app.service(&message, &transport).await?;
            // The owner's latest message (with its From and portal URL), and the
            // MESSAGE flags given on top of it.
            let invite = if message.given() {
                let latest = service.compose_resend(&owner).await?;
                Some(apply_message(latest, &message)?)
            } else {
                None
            };
            let report =
                progress::run_with_progress(|control| service.resend_with(&owner, invite, control))
                    .await?;
            finish(&report, json)
        }
        Command::Resume {
            batch,
            take_over,
            transport,
            json,
        } => {
            let batch: BatchId = id("batch", &batch)?;
            let service = app.service(&MessageArgs::defaults(), &transport).await?;
            let report = progress::run_with_progress(|control| async {
                if take_over {
                    service.resume_after_crash(&batch, control).await
                } else {
                    service.resume_with(&batch, control).await
                }
            })
            .await?;
            finish(&report, json)
        }
        Command::Retry {
            batch,
            transport,
            json,
        } => {
            let batch: BatchId = id("batch", &batch)?;
            let service = app.service(&MessageArgs::defaults(), &transport).await?;
            let report =
                progress::run_with_progress(|control| service.retry_failed(&batch, control))
                    .await?;
            finish(&report, json)
        }
        Command::Verify { token } => {
            let service = app.service_without_transport(&MessageArgs::defaults())?;
            let verified = service.verify(&token).await.map_err(token_failure)?;
            println!("{}", output::shown(verified.owner.id.as_str()));
            Ok(0)
        }
        Command::Redeem { token } => {
            let service = app.service_without_transport(&MessageArgs::defaults())?;
            let registration = service.redeem(&token).await.map_err(token_failure)?;
            println!("{}", output::shown(registration.owner.id.as_str()));
            Ok(0)
        }
        Command::Activity {
            community,
            limit,
            json,
        } => {
            let community: CommunityId = id("community", &community)?;
            let service = app.service_without_transport(&MessageArgs::defaults())?;
            let entries = service
                .activity(&community, Page::first(limit as usize))
                .await?;
            print_out(
                json,
                output::activity_json(&entries),
                output::activity_text(&entries),
            );
            Ok(0)
        }
    }
}

/// Generate & Review, then send when the invite has no problem (else exit 1, nothing
/// stored).
async fn review_and_send(
    service: &OwnerAccess,
    invite: &Invite,
    json: bool,
) -> Result<u8, Failure> {
    let review = service.review(invite).await?;
    if !review.problems.is_empty() {
        return Err(Error::InvalidInvite {
            problems: review.problems,
        }
        .into());
    }
    let report = progress::run_with_progress(|control| service.send_with(review, control)).await?;
    finish(&report, json)
}

/// One message for every token failure: no probing which tokens exist.
fn token_failure(e: Error) -> Failure {
    match e {
        Error::InvalidToken { .. } => Failure::input("this registration link is not valid"),
        other => other.into(),
    }
}

fn print_out(json: bool, value: serde_json::Value, text: String) {
    if json {
        println!("{}", output::json_text(&value));
    } else {
        print!("{}", output::terminal_safe(&text));
    }
}

/// Writes a document to stdout through a buffer, as it is made.
fn write_stdout(
    write: impl FnOnce(&mut std::io::BufWriter<std::io::StdoutLock<'static>>) -> std::io::Result<()>,
) -> Result<(), Failure> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    write(&mut out)
        .and_then(|()| std::io::Write::flush(&mut out))
        .map_err(|e| Failure::input(format!("writing to stdout: {e}")))
}

/// Prints the report; the exit status says how the batch ended.
fn finish(report: &SendReport, json: bool) -> Result<u8, Failure> {
    if json {
        write_stdout(|out| output::write_report_json(report, out))?;
    } else {
        print!("{}", output::terminal_safe(&output::report_text(report)));
    }
    Ok(if report.stopped.is_some() || report.pending > 0 {
        3
    } else if !report.failed.is_empty() {
        2
    } else {
        0
    })
}

impl MessageArgs {
    fn defaults() -> Self {
        Self::default()
    }
}

struct App {
    repo: Arc<dyn OwnerStorage>,
}

impl App {
    fn builder(
        &self,
        message: &MessageArgs,
        transport: Arc<dyn MailTransport>,
    ) -> owner_access::OwnerAccessBuilder {
        OwnerAccess::builder(self.repo.clone(), transport)
            .sender(message.from.as_deref().unwrap_or(DEFAULT_FROM))
            .portal_url(message.portal_url.as_deref().unwrap_or(DEFAULT_PORTAL_URL))
    }

    /// A service for commands that send nothing (a transport that refuses everything).
    fn service_without_transport(&self, message: &MessageArgs) -> Result<OwnerAccess, Failure> {
        Ok(self.builder(message, Arc::new(NoTransport)).build()?)
    }

    async fn service(
        &self,
        message: &MessageArgs,
        args: &TransportArgs,
    ) -> Result<OwnerAccess, Failure> {
        // The numbers first, by the library's own rules: a bad one is exit 1 before an
        // outbox folder is made or anything is stored.
        let claim_lease = match args.lease {
            None => SendOptions::default().claim_lease,
            Some(secs) => Duration::try_from_secs_f64(secs).map_err(|_| {
                Failure::input(format!(
                    "--lease {secs}: must be a number of seconds from 0.1"
                ))
            })?,
        };
        let options = SendOptions {
            concurrency: args.concurrency as usize,
            rate_per_second: args.rate,
            claim_lease,
            ..SendOptions::default()
        };
        options.validate().map_err(|e| {
            let flag = match e.setting {
                "rate_per_second" => "--rate",
                "concurrency" => "--concurrency",
                "claim_lease" => "--lease",
                other => other,
            };
            Failure::input(format!("{flag} {}: must be {}", e.value, e.expected))
        })?;
        let transport: Arc<dyn MailTransport> = match (&args.smtp, &args.outbox) {
            (Some(url), None) => {
                let mut settings = SmtpSettings::from_url(url)
                    .map_err(|e| Failure::input(format!("--smtp `{url}`: {e}")))?
                    .with_connections(args.concurrency as usize)
                    .with_accept_invalid_certs(args.insecure_tls);
                if let Some(user) = &args.smtp_user {
                    let password = match &args.smtp_password_env {
                        Some(var) => std::env::var(var).map_err(|_| {
                            Failure::input(format!(
                                "--smtp-password-env: the environment variable {var} is not set"
                            ))
                        })?,
                        None => {
                            return Err(Failure::input(
                                "--smtp-user needs --smtp-password-env VAR",
                            ));
                        }
                    };
                    settings = settings.with_credentials(user.clone(), password);
                }
                Arc::new(
                    SmtpTransport::new(settings)
                        .map_err(|e| Failure::input(format!("--smtp `{url}`: {e}")))?,
                )
            }
            (None, Some(dir)) => Arc::new(
                FileOutbox::new(dir)
                    .map_err(|e| Failure::input(format!("--outbox {}: {e}", dir.display())))?,
            ),
            _ => {
                return Err(Failure::input(
                    "give exactly one of --smtp URL or --outbox DIR",
                ));
            }
        };
        Ok(self
            .builder(message, transport)
            .send_options(options)
            .build()?)
    }

    async fn import(
        &self,
        communities: Option<&Path>,
        owners: Option<&Path>,
    ) -> Result<u8, Failure> {
        if communities.is_none() && owners.is_none() {
            return Err(Failure::input(
                "import needs --communities FILE, --owners FILE, or both",
            ));
        }
        let communities = match communities {
            Some(path) => input::read_communities(path)?,
            None => Vec::new(),
        };
        // One transaction for the whole import, fed in chunks as the file is read: a
        // bad row or a store failure anywhere keeps nothing, and a million owners are
        // never in memory at once.
        let mut session = self
            .repo
            .begin_import(SystemClock.now())
            .await
            .map_err(Error::from)?;
        session
            .upsert_communities(&communities)
            .await
            .map_err(Error::from)?;
        let mut known: HashMap<CommunityId, bool> =
            communities.iter().map(|c| (c.id.clone(), true)).collect();
        let mut imported = 0usize;
        if let Some(path) = owners {
            let mut rows = input::OwnerRows::open(path)?;
            let mut chunk = Vec::with_capacity(IMPORT_CHUNK);
            while let Some((line, owner)) = rows.next_owner()? {
                let exists = match known.get(&owner.community) {
                    Some(exists) => *exists,
                    None => {
                        let stored = self
                            .repo
                            .community(&owner.community)
                            .await
                            .map_err(Error::from)?
                            .is_some();
                        known.insert(owner.community.clone(), stored);
                        stored
                    }
                };
                if !exists {
                    return Err(rows
                        .bad(
                            line,
                            format!(
                                "community `{}` is neither in the communities file nor stored",
                                owner.community
                            ),
                        )
                        .into());
                }
                chunk.push(owner);
                if chunk.len() == IMPORT_CHUNK {
                    session.upsert_owners(&chunk).await.map_err(Error::from)?;
                    imported += chunk.len();
                    chunk.clear();
                }
            }
            session.upsert_owners(&chunk).await.map_err(Error::from)?;
            imported += chunk.len();
        }
        session.commit().await.map_err(Error::from)?;
        println!(
            "imported {} communities and {imported} owners",
            communities.len(),
        );
        Ok(0)
    }

    async fn roster(
        &self,
        community: &str,
        access: AccessArg,
        email: EmailArg,
        search: Option<String>,
        json: bool,
    ) -> Result<u8, Failure> {
        let community: CommunityId = id("community", community)?;
        let filter = OwnerFilter {
            access: match access {
                AccessArg::All => AccessFilter::All,
                AccessArg::Unregistered => AccessFilter::Unregistered,
                AccessArg::Invited => AccessFilter::Invited,
                AccessArg::Registered => AccessFilter::Registered,
            },
            email: match email {
                EmailArg::Any => EmailFilter::Any,
                EmailArg::With => EmailFilter::WithEmail,
                EmailArg::Without => EmailFilter::WithoutEmail,
            },
            search,
        };
        let service = self.service_without_transport(&MessageArgs::defaults())?;
        let roster = service.roster(&community, &filter).await?;
        print_out(
            json,
            output::roster_json(&roster),
            output::roster_text(&roster),
        );
        Ok(0)
    }

    async fn mass_edit(&self, path: &Path) -> Result<u8, Failure> {
        let edits = input::read_edits(path)?;
        if edits.is_empty() {
            return Err(Failure::input(format!("{}: no edits", path.display())));
        }
        // Owners of any communities, all or nothing for the whole file.
        let service = self.service_without_transport(&MessageArgs::defaults())?;
        let report = service.mass_edit_emails_across(&edits).await?;
        println!(
            "changed {} addresses ({} unchanged)",
            report.changed.len(),
            report.unchanged
        );
        Ok(0)
    }

    async fn review(
        &self,
        community: &str,
        select: &SelectArgs,
        message: &MessageArgs,
        json: bool,
    ) -> Result<u8, Failure> {
        let service = self.service_without_transport(message)?;
        let invite = self.invite(&service, community, select, message).await?;
        let review = service.review(&invite).await?;
        drop(invite);
        if json {
            write_stdout(|out| output::write_review_json(&review, out))?;
        } else {
            print!("{}", output::terminal_safe(&output::review_text(&review)));
        }
        Ok(if review.problems.is_empty() { 0 } else { 1 })
    }

    /// The invite from the SELECT and MESSAGE flags.
    async fn invite(
        &self,
        service: &OwnerAccess,
        community: &str,
        select: &SelectArgs,
        message: &MessageArgs,
    ) -> Result<Invite, Failure> {
        let community: CommunityId = id("community", community)?;
        let mut selection = if select.select.trim().eq_ignore_ascii_case("all") {
            // Every owner of the community, straight from the store and as ids only:
            // the review assesses each one anyway, so a roster (with its own
            // eligibility pass) would do that work twice, and a million owner records
            // would be held here only to take their ids. An unknown community is
            // reported by `compose` below.
            self.repo
                .community_owner_ids(&community, &OwnerFilter::all())
                .await
                .map_err(Error::from)?
                .into_iter()
                .collect()
        } else {
            let mut s = Selection::new();
            for raw in select
                .select
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                s.select(id("select", raw)?);
            }
            s
        };
        for raw in select
            .exclude
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            selection.deselect(&id("exclude", raw)?);
        }
        let invite = service.compose(&community, &selection).await?;
        apply_message(invite, message)
    }
}

/// The MESSAGE flags given, set on an invite (every one is kept by a draft).
fn apply_message(mut invite: Invite, message: &MessageArgs) -> Result<Invite, Failure> {
    if let Some(subject) = &message.subject {
        invite.subject = subject.clone();
    }
    // One body given: the other part is made from it, so both say the same thing.
    let text = message
        .text
        .as_deref()
        .map(|p| read_text(p, "--text"))
        .transpose()?;
    let html = message
        .html
        .as_deref()
        .map(|p| read_text(p, "--html"))
        .transpose()?;
    invite = match (text, html) {
        (Some(text), Some(html)) => invite.with_bodies(text, html),
        (Some(text), None) => invite.with_text_body(text),
        (None, Some(html)) => invite.with_html_body(html),
        (None, None) => invite,
    };
    for path in &message.attach {
        let bytes = std::fs::read(path)
            .map_err(|e| Failure::input(format!("--attach {}: {e}", path.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        invite = invite.with_attachment(Attachment::new(name, content_type(path), bytes));
    }
    if let Some(to) = &message.summary_to {
        invite = invite.with_summary_to(to.clone());
    }
    if let Some(reply_to) = &message.reply_to {
        invite = invite.with_reply_to(reply_to.clone());
    }
    if let Some(from) = &message.from {
        invite = invite.with_from(from.clone());
    }
    if let Some(url) = &message.portal_url {
        invite = invite.with_portal_url(url.clone());
    }
    Ok(invite)
}

fn read_text(path: &Path, flag: &str) -> Result<String, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::input(format!("{flag} {}: {e}", path.display())))?;
    String::from_utf8(bytes)
        .map_err(|_| Failure::input(format!("{flag} {}: not UTF-8 text", path.display())))
}

/// The content type from the file's extension.
fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "html" | "htm" => "text/html",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "csv" => "text/csv",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// The transport of commands that send nothing: any use is a bug, reported as fatal.
struct NoTransport;

impl std::fmt::Display for NoTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no transport")
    }
}

#[owner_access::async_trait]
impl MailTransport for NoTransport {
    async fn send(
        &self,
        _: &owner_access::transport::Envelope,
        _: &[u8],
    ) -> Result<owner_access::transport::Accepted, owner_access::transport::TransportError> {
        Err(owner_access::transport::TransportError::fatal(
            "this command sends nothing",
        ))
    }
}
