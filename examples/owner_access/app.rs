//! What every command starts from: the state (a SQLite file or a PostgreSQL
//! database), and a workflow service
//! built from the MESSAGE and TRANSPORT flags (an SMTP server or an outbox folder,
//! checked before anything is stored).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use owner_access::adapters::smtp::{SmtpSettings, SmtpTransport};
use owner_access::adapters::sqlite::SqliteRepository;
use owner_access::error::with_causes;
use owner_access::prelude::*;
use owner_access::transport::{Accepted, Envelope, TransportError};
use owner_access::{FileOutbox, OwnerAccess, OwnerAccessBuilder, SendOptions};

use crate::args::{MessageArgs, TransportArgs};
use crate::failure::Failure;

/// The From of an invite no --from was given for.
const DEFAULT_FROM: &str = "Owner Portal <no-reply@example.com>";
/// The portal URL of an invite no --portal-url was given for.
const DEFAULT_PORTAL_URL: &str = "http://localhost:8080/register";

/// The open state, shared by the command that runs.
pub struct App {
    pub repo: Arc<dyn OwnerStorage>,
}

impl App {
    /// Opens (or creates) the state given with `--db`: a PostgreSQL database when it
    /// is a `postgres://` or `postgresql://` URL, else a SQLite file.
    pub async fn open(db: Option<PathBuf>) -> Result<Self, Failure> {
        let db = db.ok_or_else(|| Failure::input("--db FILE is required"))?;
        if let Some(url) = db
            .to_str()
            .filter(|d| d.starts_with("postgres://") || d.starts_with("postgresql://"))
        {
            return Self::open_postgres(url).await;
        }
        let repo = SqliteRepository::open(&db).await.map_err(|e| {
            Failure::input(format!(
                "cannot open the database {}: {}",
                db.display(),
                with_causes(&e)
            ))
        })?;
        Ok(Self {
            repo: Arc::new(repo),
        })
    }

    /// Connects to the PostgreSQL database at `url` and creates or migrates its
    /// tables. The message names the server and database, never the URL's password.
    #[cfg(feature = "postgres")]
    async fn open_postgres(url: &str) -> Result<Self, Failure> {
        use owner_access::{PostgresRepository, PostgresSettings};
        let repo = PostgresRepository::connect(&PostgresSettings::new(url))
            .await
            .map_err(|e| {
                Failure::input(format!(
                    "cannot open the PostgreSQL database: {}",
                    with_causes(&e)
                ))
            })?;
        Ok(Self {
            repo: Arc::new(repo),
        })
    }

    #[cfg(not(feature = "postgres"))]
    async fn open_postgres(_: &str) -> Result<Self, Failure> {
        Err(Failure::input(
            "--db postgres://…: this build has no PostgreSQL support (build with --features postgres)",
        ))
    }

    fn builder(
        &self,
        message: &MessageArgs,
        transport: Arc<dyn MailTransport>,
    ) -> OwnerAccessBuilder {
        OwnerAccess::builder(self.repo.clone(), transport)
            .sender(message.from.as_deref().unwrap_or(DEFAULT_FROM))
            .portal_url(message.portal_url.as_deref().unwrap_or(DEFAULT_PORTAL_URL))
    }

    /// A service for commands that send nothing (a transport that refuses everything).
    pub fn service_without_transport(&self, message: &MessageArgs) -> Result<OwnerAccess, Failure> {
        Ok(self.builder(message, Arc::new(NoTransport)).build()?)
    }

    /// A service that sends through the TRANSPORT flags' server or outbox, with their
    /// concurrency, rate and lease.
    pub async fn service(
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
    async fn send(&self, _: &Envelope, _: &[u8]) -> Result<Accepted, TransportError> {
        Err(TransportError::fatal("this command sends nothing"))
    }
}
