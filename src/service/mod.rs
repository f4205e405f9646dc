//! `OwnerAccess`: the workflow, step by step, over the two ports. The only place that
//! knows the order of things: a file per step of the README's workflow table, each an
//! `impl OwnerAccess` block (mass edit, roster, drafts, review, send with resume and
//! retry, resend, tokens, reports); here the service, its builder and what the steps
//! share.

mod drafts;
mod mass_edit;
mod reports;
mod resend;
mod review;
mod roster;
mod send;
mod tokens;

pub use mass_edit::MassEditReport;
pub use reports::{FailedDelivery, SendReport, SkippedDelivery, SummaryOutcome};
pub use tokens::{Registration, VerifiedToken};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::dispatch::SendOptions;
use crate::domain::{Community, CommunityId, Mailbox, Owner, OwnerId, PropertyId};
use crate::eligibility::{Eligibility, assess};
use crate::error::{Error, InvalidSetting, Result};
use crate::invite::{AttachmentLimits, check_portal_url};
use crate::repository::{InvitationStore, OwnerRepository, OwnerStorage};
use crate::transport::MailTransport;

/// The default validity of a registration link: 14 days.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(14 * 24 * 3600);

/// The longest validity a registration link may have: a year.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// How many selected owners a review reads and assesses at a time.
const REVIEW_CHUNK: usize = 5_000;

/// The largest total of attachments per message a service may allow: 100 MiB (no
/// mail server takes more; each message in flight is built in memory).
pub const MAX_ATTACHMENTS_TOTAL: usize = 100 * 1024 * 1024;

/// Settings of an [`OwnerAccess`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// The From of every message.
    pub sender: Mailbox,
    /// The portal's registration page; links are `<portal_url>?token=...`.
    pub portal_url: String,
    /// How long a link is valid (default 14 days).
    pub token_ttl: Duration,
    /// Attachment limits (default 10 MiB each, 25 MiB in all).
    pub attachment_limits: AttachmentLimits,
    /// How batches are sent.
    pub send: SendOptions,
}

/// Builds an [`OwnerAccess`]; `build` checks the settings once.
pub struct OwnerAccessBuilder {
    directory: Arc<dyn OwnerRepository>,
    store: Arc<dyn InvitationStore>,
    transport: Arc<dyn MailTransport>,
    clock: Arc<dyn Clock>,
    sender: Option<String>,
    portal_url: Option<String>,
    token_ttl: Duration,
    attachment_limits: AttachmentLimits,
    send: SendOptions,
}

impl OwnerAccessBuilder {
    /// The From mailbox, e.g. `Owner Portal <no-reply@example.com>` (required).
    pub fn sender(mut self, sender: impl Into<String>) -> Self {
        self.sender = Some(sender.into());
        self
    }

    /// The portal's registration URL (required), `http` or `https`.
    pub fn portal_url(mut self, url: impl Into<String>) -> Self {
        self.portal_url = Some(url.into());
        self
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long links are valid (default 14 days).
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }

    /// Attachment limits.
    pub fn attachment_limits(mut self, limits: AttachmentLimits) -> Self {
        self.attachment_limits = limits;
        self
    }

    /// Send options (concurrency, rate, retries...).
    pub fn send_options(mut self, options: SendOptions) -> Self {
        self.send = options;
        self
    }

    /// Checks the settings and builds the service.
    ///
    /// # Errors
    /// [`Error::Sender`] for an invalid sender; [`Error::Config`] for a missing sender
    /// or portal URL, a portal URL that is not http(s) or has white space or control
    /// characters; [`Error::InvalidSetting`] for a setting out of range: a token
    /// lifetime outside 1 s to [`MAX_TOKEN_TTL`], attachment limits above
    /// [`MAX_ATTACHMENTS_TOTAL`] (or one file allowed more than all), and send
    /// options that fail [`SendOptions::validate`].
    pub fn build(self) -> Result<OwnerAccess> {
        let sender = self.sender.ok_or_else(|| Error::Config {
            message: "a sender (From) is required".into(),
        })?;
        let sender = Mailbox::parse(&sender)?;
        let portal_url = self.portal_url.ok_or_else(|| Error::Config {
            message: "a portal URL is required".into(),
        })?;
        let portal_url = check_portal_url(&portal_url)
            .map_err(|_| Error::Config {
                message: format!(
                    "the portal URL `{}` must be an http(s) URL without spaces",
                    portal_url.trim()
                ),
            })?
            .to_owned();
        if !(Duration::from_secs(1)..=MAX_TOKEN_TTL).contains(&self.token_ttl) {
            return Err(InvalidSetting::new(
                "token_ttl",
                self.token_ttl,
                format!("from 1s to {} days", MAX_TOKEN_TTL.as_secs() / 86_400),
            )
            .into());
        }
        let limits = &self.attachment_limits;
        if limits.max_total > MAX_ATTACHMENTS_TOTAL {
            return Err(InvalidSetting::new(
                "attachment_limits.max_total",
                limits.max_total,
                format!("at most {MAX_ATTACHMENTS_TOTAL} bytes (100 MiB)"),
            )
            .into());
        }
        if limits.max_each > limits.max_total {
            return Err(InvalidSetting::new(
                "attachment_limits.max_each",
                limits.max_each,
                format!(
                    "at most attachment_limits.max_total ({} bytes)",
                    limits.max_total
                ),
            )
            .into());
        }
        self.send.validate()?;
        Ok(OwnerAccess {
            directory: self.directory,
            store: self.store,
            transport: self.transport,
            clock: self.clock,
            settings: Settings {
                sender,
                portal_url,
                token_ttl: self.token_ttl,
                attachment_limits: self.attachment_limits,
                send: self.send,
            },
        })
    }
}

/// The Owner Access workflow over the host's owners (an [`OwnerRepository`]), the
/// workflow's own state (an [`InvitationStore`]) and a transport. Cheap to clone.
#[derive(Clone)]
pub struct OwnerAccess {
    directory: Arc<dyn OwnerRepository>,
    store: Arc<dyn InvitationStore>,
    transport: Arc<dyn MailTransport>,
    clock: Arc<dyn Clock>,
    settings: Settings,
}

impl std::fmt::Debug for OwnerAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerAccess")
            .field("directory", &self.directory.to_string())
            .field("store", &self.store.to_string())
            .field("transport", &self.transport.to_string())
            .field("settings", &self.settings)
            .finish()
    }
}

impl OwnerAccess {
    /// Starts building a service over one value that holds both ports (the crate's
    /// [`InMemoryRepository`](crate::InMemoryRepository) and
    /// [`SqliteRepository`](crate::adapters::sqlite::SqliteRepository) do) and a
    /// transport. The same as [`builder_with`](Self::builder_with) with that value as
    /// the directory and as the store: the service runs the same steps either way.
    pub fn builder(
        storage: Arc<dyn OwnerStorage>,
        transport: Arc<dyn MailTransport>,
    ) -> OwnerAccessBuilder {
        Self::builder_with(storage.clone(), storage, transport)
    }

    /// Starts building a service over the host's owners (`directory`), the workflow's
    /// store and a transport: what a host with its own owner tables uses, with one of
    /// the crate's stores.
    pub fn builder_with(
        directory: Arc<dyn OwnerRepository>,
        store: Arc<dyn InvitationStore>,
        transport: Arc<dyn MailTransport>,
    ) -> OwnerAccessBuilder {
        OwnerAccessBuilder {
            directory,
            store,
            transport,
            clock: Arc::new(SystemClock),
            sender: None,
            portal_url: None,
            token_ttl: DEFAULT_TOKEN_TTL,
            attachment_limits: AttachmentLimits::default(),
            send: SendOptions::default(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The host's port: communities and owners.
    pub fn directory(&self) -> &Arc<dyn OwnerRepository> {
        &self.directory
    }

    /// The workflow's port: drafts, batches, deliveries, tokens, activity.
    pub fn store(&self) -> &Arc<dyn InvitationStore> {
        &self.store
    }

    async fn community(&self, id: &CommunityId) -> Result<Community> {
        self.directory
            .community(id)
            .await
            .map_err(Error::directory)?
            .ok_or_else(|| Error::NotFound {
                what: "community",
                id: id.to_string(),
            })
    }

    /// The holders of the owners' email addresses that are held by more than one
    /// owner record: only those can make an address shared. An address held once is
    /// held by the owner being assessed (had the host changed that owner's address
    /// meanwhile, the send-time check skips the owner). Keeping only the shared ones
    /// keeps a 100,000-owner review from holding a second copy of every address.
    async fn holders_of(
        &self,
        owners: impl IntoIterator<Item = &Owner>,
    ) -> Result<HashMap<String, Vec<(OwnerId, PropertyId)>>> {
        let mut keys: Vec<String> = owners.into_iter().filter_map(Owner::email_key).collect();
        keys.sort_unstable();
        keys.dedup();
        // The store leaves out the keys held once.
        let holders = self
            .directory
            .shared_email_holders(&keys)
            .await
            .map_err(Error::directory)?;
        drop(keys);
        let mut map: HashMap<String, Vec<_>> = HashMap::new();
        for holder in holders {
            map.entry(holder.key)
                .or_default()
                .push((holder.owner, holder.property));
        }
        Ok(map)
    }
}

fn assess_with(
    owner: &Owner,
    holders: &HashMap<String, Vec<(OwnerId, PropertyId)>>,
) -> Eligibility {
    let empty = Vec::new();
    let found = owner
        .email_key()
        .and_then(|k| holders.get(&k))
        .unwrap_or(&empty);
    assess(Some(owner), found)
}
