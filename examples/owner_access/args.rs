//! The command line: every command, its flags and their help texts (what `--help`
//! prints), as clap reads them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "owner_access",
    about = "Invite homeowners to their owner portal, in bulk and safely"
)]
pub struct Cli {
    /// The state: a SQLite file (created on first use), or a PostgreSQL database as
    /// a URL, `postgres://user@host:port/db?sslmode=require` (tables created on
    /// first use; needs the `postgres` feature).
    #[arg(long, global = true, value_name = "FILE|URL")]
    pub db: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
pub enum DraftCommand {
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
pub enum AccessArg {
    Unregistered,
    Invited,
    Registered,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum EmailArg {
    With,
    Without,
    Any,
}

#[derive(Args, Clone)]
pub struct SelectArgs {
    /// `all` (every owner of the community) or `ID,ID,...`.
    #[arg(long, default_value = "all")]
    pub select: String,
    /// Owners to leave out: `ID,ID,...`.
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
}

#[derive(Args, Clone, Default)]
pub struct MessageArgs {
    #[arg(long)]
    pub subject: Option<String>,
    /// Plain-text body template (without --html, the HTML part is made from it).
    #[arg(long, value_name = "FILE")]
    pub text: Option<PathBuf>,
    /// HTML body template (without --text, the text part is made from it).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// A file to attach (repeatable).
    #[arg(long, value_name = "FILE")]
    pub attach: Vec<PathBuf>,
    #[arg(long, value_name = "ADDR")]
    pub summary_to: Option<String>,
    #[arg(long, value_name = "ADDR")]
    pub reply_to: Option<String>,
    /// The From mailbox [default: Owner Portal <no-reply@example.com>; for resend, the
    /// owner's latest batch's].
    #[arg(long, value_name = "ADDR")]
    pub from: Option<String>,
    /// The portal's registration page [default: http://localhost:8080/register; for
    /// resend, the owner's latest batch's].
    #[arg(long, value_name = "URL")]
    pub portal_url: Option<String>,
}
impl MessageArgs {
    /// Whether any MESSAGE flag was given.
    pub fn given(&self) -> bool {
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
pub struct TransportArgs {
    /// `smtp://host:port`, `smtp://host:port?starttls=required` or `smtps://host:port`.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "outbox",
        required_unless_present = "outbox"
    )]
    pub smtp: Option<String>,
    #[arg(long, value_name = "USER", requires = "smtp")]
    pub smtp_user: Option<String>,
    /// The environment variable that holds the SMTP password.
    #[arg(long, value_name = "VAR", requires = "smtp")]
    pub smtp_password_env: Option<String>,
    /// Accept self-signed certificates (for tests only).
    #[arg(long, requires = "smtp")]
    pub insecure_tls: bool,
    /// Write one .eml file per message into DIR instead of sending.
    #[arg(long, value_name = "DIR")]
    pub outbox: Option<PathBuf>,
    /// Messages in flight at once (and SMTP connections).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// At most this many messages per second for the whole batch, across every
    /// process sending it (`resume --batch ID` run several times at once share it),
    /// kept in the database; from 1/3600 (0.000278, one an hour) to 1000000.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long a claim on a delivery lasts unless this run renews it, in seconds
    /// (default 20, from 0.1): after a crash, its deliveries wait this long before
    /// another run takes them.
    #[arg(long, value_name = "SECONDS")]
    pub lease: Option<f64>,
}

impl MessageArgs {
    /// No MESSAGE flag: the defaults, for commands that take none.
    pub fn defaults() -> Self {
        Self::default()
    }
}
