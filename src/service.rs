//! `OwnerAccess`: the workflow, step by step, over the two ports. The only place that
//! knows the order of things.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::clock::{Clock, SystemClock};
use crate::dispatch::{Engine, PreparedBatch, RunOutcome, SendOptions};
use crate::domain::{
    AccessState, ActivityEntry, ActivityKind, Batch, BatchId, Community, CommunityId, Delivery,
    DeliveryCounts, DeliveryState, Draft, DraftId, EmailAddress, InvitationState, Mailbox,
    NewBatch, Owner, OwnerId, Page, PropertyId, SkipReason, Timestamp, TokenHash, TokenRecord,
    TokenRejection, TokenState, delivered_key,
};
use crate::eligibility::{
    AccessFilter, Eligibility, Ineligible, OwnerFilter, Roster, RosterCounts, RosterRow, assess,
};
use crate::error::{Error, InvalidSetting, MassEditProblem, Result, Side};
use crate::invite::{AttachmentLimits, Invite, check_portal_url};
use crate::mime::{MessageFrame, MessageIds, message_id};
use crate::progress::{RunControl, StopReason};
use crate::repository::{
    EmailEdit, InvitationStore, Marked, OwedRegistration, OwnerRepository, OwnerRepositoryExt,
    OwnerStorage, RedeemOutcome,
};
use crate::review::{Excluded, Preview, Recipient, Review};
use crate::selection::Selection;
use crate::template::{
    CompiledTemplate, DEFAULT_HTML, DEFAULT_SUBJECT, DEFAULT_TEXT, MergeFields,
    html_to_text_template,
};
use crate::token::{RegistrationToken, hash_token, looks_like_token, registration_link};
use crate::transport::{Envelope, MailTransport};

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

/// The result of a mass edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MassEditReport {
    /// Owners whose primary email changed (their outstanding links were revoked).
    pub changed: Vec<OwnerId>,
    /// Rows that set the address the owner already had.
    pub unchanged: usize,
}

/// An owner's delivery that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedDelivery {
    /// The owner.
    pub owner: OwnerId,
    /// Why.
    pub error: String,
}

/// An owner's delivery that was not sent on purpose: checked again just before
/// sending, the owner was no longer one the batch may send to. Not a failure: it does
/// not make [`SendReport::is_complete`] false.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedDelivery {
    /// The owner.
    pub owner: OwnerId,
    /// Why.
    pub reason: SkipReason,
}

/// What happened to the Summary recap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "summary", rename_all = "snake_case")]
pub enum SummaryOutcome {
    /// Sent to this address.
    Sent {
        /// The Summary address.
        to: String,
    },
    /// Could not be sent (the batch itself is unaffected).
    Failed {
        /// The Summary address.
        to: String,
        /// Why.
        error: String,
    },
}

/// The state of a batch after a send run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SendReport {
    /// The batch (absent when nothing was to be sent and no batch was made).
    pub batch: Option<BatchId>,
    /// Deliveries in the batch.
    pub recipients: usize,
    /// Accepted by the server.
    pub sent: usize,
    /// Still to send (the run stopped, or another process holds them).
    pub pending: usize,
    /// Of `sent`, the messages whose outcome the store did not take: the run stopped
    /// with [`StopReason::StoreUnavailable`]. Their deliveries stay claimed until the
    /// lease runs out; `resume` then sends them again with the same Message-ID (the
    /// duplicates a crash can cause, and no more). 0 otherwise.
    pub unrecorded: usize,
    /// Failed, with reasons.
    pub failed: Vec<FailedDelivery>,
    /// Deliveries of the batch not sent on purpose, with reasons (the owner moved,
    /// registered, changed or now shares their address since the batch was made).
    /// Unlike [`excluded`](Self::excluded), these are deliveries of the batch: they
    /// count in `recipients`.
    pub skipped: Vec<SkippedDelivery>,
    /// Selected owners who were not sent to, with reasons (from the review; empty for
    /// `resume` and `retry_failed`).
    pub excluded: Vec<Excluded>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<StopReason>,
    /// The Summary recap, if one was sent or tried in this run.
    pub summary: Option<SummaryOutcome>,
}

impl SendReport {
    /// Every recipient sent (or there were none), nothing pending.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty() && self.pending == 0 && self.stopped.is_none()
    }
}

/// A valid registration link's owner, as `verify` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The owner.
    pub owner: Owner,
    /// When the link expires.
    pub expires_at: Timestamp,
}

/// A completed registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The owner, now registered.
    pub owner: Owner,
    /// When.
    pub at: Timestamp,
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

    // ----- Mass edit -------------------------------------------------------------

    /// Sets many owners' primary emails at once ("Mass Edit"), all or nothing.
    ///
    /// A blank email clears the address. Every row is checked first; if any owner is
    /// unknown (or not in `community`), appears twice, gets an invalid address, or
    /// would share an address with another owner record anywhere in the repository
    /// (the same mailbox: the same [`delivered_key`], so
    /// `a@ｅxample.org` is refused while another owner holds `a@example.org`), the
    /// whole edit is rejected with
    /// [`Error::MassEditRejected`] naming every bad row, and nothing changes. Owners
    /// whose address changes lose their outstanding links.
    pub async fn mass_edit_emails(
        &self,
        community: &CommunityId,
        edits: &[EmailEdit],
    ) -> Result<MassEditReport> {
        self.mass_edit_in(Some(community), edits).await
    }

    /// [`mass_edit_emails`](Self::mass_edit_emails) for owners of any communities:
    /// one file of edits, all or nothing as a whole. Each community whose owners the
    /// edit touches gets its own activity entry (with its own count), in the same
    /// step. An id that names no owner at all is an `UnknownOwner` row.
    pub async fn mass_edit_emails_across(&self, edits: &[EmailEdit]) -> Result<MassEditReport> {
        self.mass_edit_in(None, edits).await
    }

    async fn mass_edit_in(
        &self,
        community: Option<&CommunityId>,
        edits: &[EmailEdit],
    ) -> Result<MassEditReport> {
        let ids: Vec<OwnerId> = edits.iter().map(|e| e.owner.clone()).collect();
        let existing: HashMap<OwnerId, Owner> = self
            .directory
            .owners(&ids)
            .await
            .map_err(Error::directory)?
            .into_iter()
            .filter(|o| community.is_none_or(|c| &o.community == c))
            .map(|o| (o.id.clone(), o))
            .collect();
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        // Each edited owner's new comparison key, for the shared-address check.
        let mut new_keys: BTreeMap<OwnerId, Option<String>> = BTreeMap::new();
        for edit in edits {
            if !seen.insert(edit.owner.clone()) {
                problems.push(MassEditProblem::DuplicateRow {
                    owner: edit.owner.clone(),
                });
                continue;
            }
            if !existing.contains_key(&edit.owner) {
                problems.push(MassEditProblem::UnknownOwner {
                    owner: edit.owner.clone(),
                });
                continue;
            }
            let raw = edit
                .email
                .as_deref()
                .map(str::trim)
                .filter(|e| !e.is_empty());
            match raw.map(EmailAddress::parse) {
                None => {
                    new_keys.insert(edit.owner.clone(), None);
                }
                Some(Ok(address)) => {
                    new_keys.insert(edit.owner.clone(), Some(address.normalized().to_owned()));
                }
                Some(Err(error)) => problems.push(MassEditProblem::InvalidEmail {
                    owner: edit.owner.clone(),
                    email: raw.unwrap_or_default().to_owned(),
                    error,
                }),
            }
        }
        let keys: Vec<String> = new_keys.values().flatten().cloned().collect();
        let holders = self
            .directory
            .email_holders(&keys)
            .await
            .map_err(Error::directory)?;
        let mut users: HashMap<&str, Vec<OwnerId>> = HashMap::new();
        for holder in &holders {
            // An edited owner holds its old address no more.
            if !new_keys.contains_key(&holder.owner) {
                users
                    .entry(holder.key.as_str())
                    .or_default()
                    .push(holder.owner.clone());
            }
        }
        for (owner, key) in &new_keys {
            if let Some(key) = key {
                users.entry(key.as_str()).or_default().push(owner.clone());
            }
        }
        for edit in edits {
            let Some(Some(key)) = new_keys.get(&edit.owner) else {
                continue;
            };
            let mut with: Vec<OwnerId> = users[key.as_str()]
                .iter()
                .filter(|o| **o != edit.owner)
                .cloned()
                .collect();
            if !with.is_empty() && seen.remove(&edit.owner) {
                with.sort();
                with.dedup();
                problems.push(MassEditProblem::SharedEmail {
                    owner: edit.owner.clone(),
                    email: edit.email.clone().unwrap_or_default(),
                    with,
                });
            }
        }
        if !problems.is_empty() {
            return Err(Error::MassEditRejected { problems });
        }
        // Each community the edit touches, with how many of its owners change address.
        let mut changing: BTreeMap<&CommunityId, usize> = BTreeMap::new();
        for e in edits {
            let owner = &existing[&e.owner];
            *changing.entry(&owner.community).or_default() +=
                usize::from(owner.email_key() != new_keys[&e.owner]);
        }
        let now = self.clock.now();
        let activity: Vec<ActivityEntry> = changing
            .into_iter()
            .map(|(community, changed)| ActivityEntry {
                community: community.clone(),
                at: now,
                kind: ActivityKind::MassEdit { changed },
            })
            .collect();
        let edits: Vec<EmailEdit> = edits
            .iter()
            .map(|e| EmailEdit {
                owner: e.owner.clone(),
                email: e
                    .email
                    .as_deref()
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned),
            })
            .collect();
        // The directory commits first; the links of the owners whose address changed
        // are revoked and the activity appended after it, in the store. A crash
        // between the two loses at most that bookkeeping: the entries are appended at
        // most once, and an old link stops working anyway, since a link works only
        // while the owner's email is the address it was sent to.
        let changed = self
            .directory
            .update_emails(&edits)
            .await
            .map_err(Error::directory)?;
        if !changed.is_empty() {
            self.store
                .revoke_tokens(&changed, now)
                .await
                .map_err(Error::store)?;
        }
        for entry in &activity {
            self.store
                .append_activity(entry)
                .await
                .map_err(Error::store)?;
        }
        Ok(MassEditReport {
            unchanged: edits.len() - changed.len(),
            changed,
        })
    }

    // ----- Roster and selection --------------------------------------------------

    /// The Manage screen: the community's owners passing `filter`, each with their
    /// access status and eligibility, and the community's counts per status.
    ///
    /// Eligibility takes the whole repository into account (an address shared with an
    /// owner of another community counts as shared). The owners are the directory's,
    /// their invitation states (Invited, Expired, Not invited) the store's, joined
    /// here: one call for the owners, one for their states and one for the
    /// addresses, whatever the size of the community.
    pub async fn roster(&self, community: &CommunityId, filter: &OwnerFilter) -> Result<Roster> {
        self.community(community).await?;
        self.settle_owed().await?;
        let now = self.clock.now();
        // The directory's owners joined with the store's invitation states: the
        // counts are over every owner, the filter's Invited tab is the store's to say.
        let owners = self
            .directory
            .community_owners(community, &OwnerFilter::all())
            .await
            .map_err(Error::directory)?;
        let ids: Vec<OwnerId> = owners.iter().map(|o| o.id.clone()).collect();
        let mut invitations: HashMap<OwnerId, InvitationState> = self
            .store
            .invitation_states(&ids)
            .await
            .map_err(Error::store)?
            .into_iter()
            .collect();
        drop(ids);
        let counts = RosterCounts::tally(
            owners
                .iter()
                .map(|o| AccessState::of(o, invitations.get(&o.id), now)),
        );
        let mut rows: Vec<(Owner, Option<InvitationState>)> = owners
            .into_iter()
            .filter_map(|o| {
                let invitation = invitations.remove(&o.id);
                filter
                    .matches(&o, invitation.as_ref(), now)
                    .then_some((o, invitation))
            })
            .collect();
        rows.sort_by(|(a, _), (b, _)| {
            (&a.last_name, &a.first_name, &a.id).cmp(&(&b.last_name, &b.first_name, &b.id))
        });
        let holders = self.holders_of(rows.iter().map(|(o, _)| o)).await?;
        let rows = rows
            .into_iter()
            .map(|(owner, invitation)| {
                let eligibility = assess_with(&owner, &holders);
                RosterRow {
                    state: AccessState::of(&owner, invitation.as_ref(), now),
                    invitation,
                    owner,
                    eligibility,
                }
            })
            .collect();
        Ok(Roster { rows, counts })
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

    // ----- Compose, drafts ---------------------------------------------------------

    /// The Send Message page, prefilled: the default subject and bodies, Reply-To the
    /// community's, From and portal URL the service's, for the selected owners.
    pub async fn compose(&self, community: &CommunityId, selection: &Selection) -> Result<Invite> {
        let community = self.community(community).await?;
        Ok(Invite {
            community: community.id,
            selection: selection.clone(),
            subject: DEFAULT_SUBJECT.to_owned(),
            text_body: Some(DEFAULT_TEXT.to_owned()),
            html_body: Some(DEFAULT_HTML.to_owned()),
            reply_to: community.reply_to.map(String::from),
            summary_to: None,
            attachments: Vec::new(),
            draft: None,
            from: Some(self.settings.sender.to_string()),
            portal_url: Some(self.settings.portal_url.clone()),
        })
    }

    /// "Resend to every invited owner who has not registered": an invite selecting
    /// them, to review and send like any other.
    ///
    /// The directory gives the community's unregistered owners; the store says which
    /// of them were sent an invitation (a chunk of owners per call).
    pub async fn compose_resend_to_invited(&self, community: &CommunityId) -> Result<Invite> {
        let filter = OwnerFilter::all().with_access(AccessFilter::Invited);
        let unregistered = self
            .directory
            .community_owner_ids(community, &filter)
            .await
            .map_err(Error::directory)?;
        let mut invited = Vec::new();
        for chunk in unregistered.chunks(REVIEW_CHUNK) {
            let states = self
                .store
                .invitation_states(chunk)
                .await
                .map_err(Error::store)?;
            invited.extend(states.into_iter().map(|(owner, _)| owner));
        }
        let selection = invited.into_iter().collect();
        self.compose(community, &selection).await
    }

    /// Saves an invite as a draft (new, or updating the draft it came from) and notes
    /// it in the activity feed. Returns the draft id; the invite is stored as written,
    /// attachments included. Problems are not checked here: a draft may be unfinished.
    pub async fn save_draft(&self, invite: &Invite) -> Result<DraftId> {
        self.community(&invite.community).await?;
        let now = self.clock.now();
        let existing = match &invite.draft {
            Some(id) => self.store.draft(id).await.map_err(Error::store)?,
            None => None,
        };
        let id = existing
            .as_ref()
            .map(|d| d.id.clone())
            .unwrap_or_else(DraftId::generate);
        let mut stored = invite.clone();
        stored.draft = Some(id.clone());
        let draft = Draft {
            id: id.clone(),
            invite: stored,
            created_at: existing.map_or(now, |d| d.created_at),
            updated_at: now,
        };
        self.store.save_draft(&draft).await.map_err(Error::store)?;
        self.store
            .append_activity(&ActivityEntry {
                community: invite.community.clone(),
                at: now,
                kind: ActivityKind::DraftSaved {
                    draft: id.clone(),
                    selected: invite.selection.len(),
                },
            })
            .await
            .map_err(Error::store)?;
        Ok(id)
    }

    /// A saved draft's invite, to edit, review and send.
    pub async fn load_draft(&self, id: &DraftId) -> Result<Invite> {
        Ok(self.draft(id).await?.invite)
    }

    async fn draft(&self, id: &DraftId) -> Result<Draft> {
        self.store
            .draft(id)
            .await
            .map_err(Error::store)?
            .ok_or_else(|| Error::NotFound {
                what: "draft",
                id: id.to_string(),
            })
    }

    /// A community's drafts, newest first.
    pub async fn drafts(&self, community: &CommunityId) -> Result<Vec<Draft>> {
        self.store.drafts(community).await.map_err(Error::store)
    }

    /// Discards a draft and notes it in the activity feed.
    pub async fn discard_draft(&self, id: &DraftId) -> Result<()> {
        let draft = self.draft(id).await?;
        self.store.delete_draft(id).await.map_err(Error::store)?;
        self.store
            .append_activity(&ActivityEntry {
                community: draft.invite.community,
                at: self.clock.now(),
                kind: ActivityKind::DraftDiscarded { draft: id.clone() },
            })
            .await
            .map_err(Error::store)?;
        Ok(())
    }

    // ----- Review -------------------------------------------------------------------

    /// Generate & Review: every recipient, every excluded owner with the reason, every
    /// problem. Mints no token and changes nothing.
    ///
    /// # Errors
    /// Only when the community does not exist or the repository fails; problems with
    /// the invite are in [`Review::problems`].
    pub async fn review(&self, invite: &Invite) -> Result<Review> {
        let community = self.community(&invite.community).await?;
        self.settle_owed().await?;
        let mut problems = invite.check_envelope(&self.settings.attachment_limits);
        let template = match CompiledTemplate::for_invite(invite) {
            Ok(t) => Some(Arc::new(t)),
            Err(found) => {
                for p in found {
                    if !problems.contains(&p) {
                        problems.push(p);
                    }
                }
                None
            }
        };
        // The selection is assessed a chunk of owners at a time (a selection iterates
        // in id order): only the recipients' ids and addresses and the excluded
        // owners are kept, never every owner record of a million-owner community at
        // once.
        let mut recipients = Vec::new();
        let mut excluded = Vec::new();
        let mut chunk: Vec<OwnerId> = Vec::with_capacity(REVIEW_CHUNK);
        let mut selected = invite.selection.iter().peekable();
        while selected.peek().is_some() {
            chunk.clear();
            chunk.extend(selected.by_ref().take(REVIEW_CHUNK).cloned());
            self.review_chunk(&community.id, &chunk, &mut recipients, &mut excluded)
                .await?;
        }
        recipients.shrink_to_fit();
        Ok(Review {
            invite: invite.clone(),
            community,
            recipients,
            excluded,
            problems,
            reviewed_at: self.clock.now(),
            template,
        })
    }

    /// Assesses one chunk of selected ids (in id order), adding to the review's
    /// recipients and excluded owners in that order.
    async fn review_chunk(
        &self,
        community: &CommunityId,
        ids: &[OwnerId],
        recipients: &mut Vec<Recipient>,
        excluded: &mut Vec<Excluded>,
    ) -> Result<()> {
        let mut owners: Vec<Owner> = self.directory.owners(ids).await.map_err(Error::directory)?;
        owners.retain(|o| &o.community == community);
        owners.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let holders = self.holders_of(&owners).await?;
        // Ids and owners both sorted: walked together, each owner looked at once.
        let mut owners = owners.iter().peekable();
        for id in ids {
            while owners.next_if(|o| &o.id < id).is_some() {}
            match owners.next_if(|o| &o.id == id) {
                None => excluded.push(Excluded {
                    owner: id.clone(),
                    reason: Ineligible::UnknownOwner,
                }),
                Some(owner) => match assess_with(owner, &holders) {
                    Eligibility::Eligible { email } => recipients.push(Recipient {
                        owner: id.clone(),
                        email,
                    }),
                    Eligibility::Excluded { reason } => excluded.push(Excluded {
                        owner: id.clone(),
                        reason,
                    }),
                },
            }
        }
        Ok(())
    }

    /// What one recipient of a review will receive, with a placeholder instead of the
    /// personal link (previewing mints no token): the review's address, and the
    /// names and property address of the owner's record as stored now.
    ///
    /// # Errors
    /// [`Error::InvalidInvite`] when the review's templates do not compile;
    /// [`Error::NotFound`] when the owner is not one of the review's recipients.
    pub async fn preview(&self, review: &Review, owner: &OwnerId) -> Result<Preview> {
        let Some(template) = &review.template else {
            return Err(Error::InvalidInvite {
                problems: review.problems.clone(),
            });
        };
        let recipient = review
            .recipients
            .iter()
            .find(|r| &r.owner == owner)
            .ok_or_else(|| Error::NotFound {
                what: "recipient",
                id: owner.to_string(),
            })?;
        // The review keeps each recipient's id and address only; the names and the
        // property address come from the record as stored now.
        let record = self
            .directory
            .owner(owner)
            .await
            .map_err(Error::directory)?
            .ok_or_else(|| Error::NotFound {
                what: "owner",
                id: owner.to_string(),
            })?;
        let now = self.clock.now();
        let expires_at = now + self.settings.token_ttl;
        let portal_url = review.invite.portal_url_or(&self.settings.portal_url);
        let link = registration_link(portal_url, &RegistrationToken::placeholder());
        let reply_to = review.invite.reply_to_address();
        let reply_to = reply_to
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let fields = MergeFields::for_owner(
            &record,
            &review.community,
            link,
            expires_at,
            portal_url,
            &reply_to,
        );
        let parts = template
            .render(&fields)
            .map_err(|p| Error::InvalidInvite { problems: vec![p] })?;
        let frame = MessageFrame::new(
            &review.invite.from_mailbox(&self.settings.sender),
            review.invite.reply_to_address().as_ref(),
            &review.invite.attachments,
        );
        let to = Mailbox::named_or_bare(&fields.full_name, &recipient.email);
        let mut message = Vec::new();
        frame.write_message(
            &to,
            &message_id(
                &BatchId::new("preview").expect("a valid id"),
                owner,
                "preview.invalid",
            ),
            now,
            &parts,
            &mut message,
        );
        Ok(Preview {
            subject: parts.subject,
            text: parts.text,
            html: parts.html,
            message,
        })
    }

    // ----- Send ---------------------------------------------------------------------

    /// Sends a reviewed invite: stores the batch (with the invite as written, its
    /// attachments, its activity entry and every delivery as pending) in one step,
    /// then sends. See [`send_with`](Self::send_with).
    ///
    /// When the run ends (after the Summary recap), the transport is closed
    /// ([`MailTransport::close`]: QUIT on every SMTP connection); the next send opens
    /// new connections. The same holds for `resume`, `retry_failed` and `resend`.
    ///
    /// The send is one future that drives all its connections. On tokio, run it
    /// where its sockets are polled: in a spawned task, or on a current-thread
    /// runtime. Awaited in `block_on` of a multi-threaded runtime, every socket event
    /// passes from a worker thread to the blocked one; that made the end-to-end send
    /// 15% slower (`benches/e2e/run.sh`).
    pub async fn send(&self, review: Review) -> Result<SendReport> {
        self.send_with(review, RunControl::new()).await
    }

    /// [`send`](Self::send) with progress events and a stop signal.
    ///
    /// # Errors
    /// [`Error::InvalidInvite`] when the review has problems (nothing is stored or
    /// sent); repository errors. Delivery failures are not errors: they are in the
    /// report.
    pub async fn send_with(&self, review: Review, control: RunControl) -> Result<SendReport> {
        if !review.is_sendable() {
            return Err(Error::InvalidInvite {
                problems: review.problems,
            });
        }
        if review.recipients.is_empty() {
            return Ok(SendReport {
                batch: None,
                recipients: 0,
                sent: 0,
                pending: 0,
                unrecorded: 0,
                failed: Vec::new(),
                skipped: Vec::new(),
                excluded: review.excluded,
                stopped: None,
                summary: None,
            });
        }
        let (batch, excluded, recipients) = self.store_batch(review, false).await?;
        let mut report = self
            .run_batch(batch, control, false, Some(all_pending(recipients)))
            .await?;
        report.excluded = excluded;
        Ok(report)
    }

    /// Stores the reviewed batch; gives back who was left out. The review is used up:
    /// the recipients' ids and addresses move into the stored batch and the rest of
    /// each owner is let go before the store call, so a large batch is not held twice.
    /// Also gives back how many deliveries it stored.
    async fn store_batch(
        &self,
        review: Review,
        resend: bool,
    ) -> Result<(Batch, Vec<Excluded>, usize)> {
        let now = self.clock.now();
        let Review {
            invite,
            community,
            recipients,
            excluded,
            ..
        } = review;
        // The From and portal URL the invite was written with (the review checked
        // them); the batch keeps them, so resume, retry and resend use them too.
        let sender = invite.from_mailbox(&self.settings.sender);
        let portal_url = invite.portal_url_or(&self.settings.portal_url).to_owned();
        let batch = Batch {
            id: BatchId::generate(),
            community: community.id,
            invite,
            sender,
            portal_url,
            token_ttl_seconds: self.settings.token_ttl.as_secs(),
            created_at: now,
            resend,
        };
        let recipients_len = recipients.len();
        let deliveries = recipients.into_iter().map(|r| (r.owner, r.email)).collect();
        let new = NewBatch {
            deliveries,
            activity: ActivityEntry {
                community: batch.community.clone(),
                at: now,
                kind: ActivityKind::BatchCreated {
                    batch: batch.id.clone(),
                    recipients: recipients_len,
                    excluded: excluded.len(),
                    resend,
                },
            },
            batch,
        };
        self.store.create_batch(&new).await.map_err(Error::store)?;
        Ok((new.batch, excluded, recipients_len))
    }

    /// Finishes a batch (after a stop or a crash): sends what is pending, with the
    /// batch's stored message, and ends when the batch is settled.
    ///
    /// Deliveries another sender holds are not touched while their lease runs: the
    /// run waits, telling its observer ([`Progress::Waiting`](crate::Progress::Waiting))
    /// how many they are and until when. If that sender is dead, its leases run out
    /// within [`SendOptions::claim_lease`] of its last renewal and the run takes them
    /// over; if it is alive, the run follows it until the batch is settled. The only
    /// early ends are stops, and each has a reason in [`SendReport::stopped`].
    ///
    /// Each pending owner is checked against the repository again before their
    /// message goes out (the batch may be old): one who is gone, moved to another
    /// community, registered, has another primary email or now shares it is skipped
    /// with that [`SkipReason`], never sent and not failed (see
    /// [`SendReport::skipped`]). The same check runs in every send.
    pub async fn resume(&self, batch: &BatchId) -> Result<SendReport> {
        self.resume_with(batch, RunControl::new()).await
    }

    /// [`resume`](Self::resume) with progress events and a stop signal.
    pub async fn resume_with(&self, batch: &BatchId, control: RunControl) -> Result<SendReport> {
        let batch = self.batch(batch).await?;
        self.run_batch(batch, control, false, None).await
    }

    /// [`resume_with`](Self::resume_with) without the wait: first ends every claim on
    /// the batch, whoever holds it ([`InvitationStore::revoke_claims`]), for an
    /// operator who knows that the sender holding them is dead.
    ///
    /// What it risks, if that sender is in fact alive: the messages it has in flight
    /// go twice (with the same Message-ID), and it stops at its next write about the
    /// batch, which the repository refuses. Nobody is counted twice.
    pub async fn resume_after_crash(
        &self,
        batch: &BatchId,
        control: RunControl,
    ) -> Result<SendReport> {
        let batch = self.batch(batch).await?;
        self.run_batch(batch, control, true, None).await
    }

    /// Sends again to the owners of a batch whose delivery failed: one call.
    pub async fn retry_failed(&self, batch: &BatchId, control: RunControl) -> Result<SendReport> {
        let batch = self.batch(batch).await?;
        self.store
            .requeue_failed(&batch.id)
            .await
            .map_err(Error::store)?;
        self.run_batch(batch, control, false, None).await
    }

    async fn batch(&self, id: &BatchId) -> Result<Batch> {
        self.store
            .batch(id)
            .await
            .map_err(Error::store)?
            .ok_or_else(|| Error::NotFound {
                what: "batch",
                id: id.to_string(),
            })
    }

    /// Runs the engine on a batch and reports. `fresh` is the counts of a batch just
    /// stored (all pending), which need no read.
    ///
    /// Once the engine has run, a repository error is no longer an `Err`: messages
    /// may have gone out, so the report says what is known, with
    /// [`StopReason::StoreUnavailable`]. An `Err` means nothing was sent.
    async fn run_batch(
        &self,
        batch: Batch,
        control: RunControl,
        take_over: bool,
        fresh: Option<DeliveryCounts>,
    ) -> Result<SendReport> {
        let template = CompiledTemplate::for_invite(&batch.invite)
            .map_err(|problems| Error::InvalidInvite { problems })?;
        let community = self.community(&batch.community).await?;
        // Before any claim: an owner whose redeem crashed midway is registered first,
        // so the engine's per-chunk check skips them.
        self.settle_owed().await?;
        let frame = MessageFrame::new(
            &batch.sender,
            batch.invite.reply_to_address().as_ref(),
            &batch.invite.attachments,
        );
        let attachments_len = frame
            .encoded_attachments()
            .iter()
            .map(|a| a.as_bytes().len())
            .sum();
        let prepared = PreparedBatch {
            attachments_len,
            message_ids: MessageIds::new(&batch.id, batch.sender.address.domain()),
            reply_to: batch
                .invite
                .reply_to_address()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            community,
            template,
            frame,
            batch,
        };
        let engine = Engine {
            repo: self.store.as_ref(),
            directory: self.directory.as_ref(),
            transport: self.transport.as_ref(),
            clock: self.clock.as_ref(),
            options: &self.settings.send,
            control: &control,
        };
        if take_over {
            self.store
                .revoke_claims(&prepared.batch.id)
                .await
                .map_err(Error::store)?;
        }
        let before = match fresh {
            Some(counts) => counts,
            None => self
                .store
                .delivery_counts(&prepared.batch.id)
                .await
                .map_err(Error::store)?,
        };
        let outcome = engine.run(&prepared, before).await;
        let mut stopped = outcome.stopped.clone();
        // The engine's final counts and the failed ones, not every delivery: a
        // 100,000-owner batch is not read back whole to report on it. The counts are
        // those the engine ended on, so what is pending in the report is what its
        // stop reason left.
        let failed = if outcome.counts_stored {
            match self.store.failed_deliveries(&prepared.batch.id).await {
                Ok(failed) => Some(failed),
                Err(e) => {
                    stopped = Some(StopReason::port_failed(Side::Store, &e));
                    None
                }
            }
        } else {
            None
        };
        let failed = match failed {
            Some(failed) => failed
                .into_iter()
                .filter_map(|d| match d.state {
                    DeliveryState::Failed { error, .. } => Some(FailedDelivery {
                        owner: d.owner,
                        error,
                    }),
                    _ => None,
                })
                .collect(),
            // What this run recorded: earlier runs' failures are in the store, which
            // could not be read.
            None => outcome
                .recorded_failed
                .iter()
                .map(|(owner, error)| FailedDelivery {
                    owner: owner.clone(),
                    error: error.clone(),
                })
                .collect(),
        };
        // Skipped deliveries are rare: read only when the counts say there are some.
        // If the store cannot be read, the report lists none (the counts still say).
        let skipped = if outcome.counts_stored && outcome.counts.skipped > 0 {
            match self.store.skipped_deliveries(&prepared.batch.id).await {
                Ok(skipped) => skipped
                    .into_iter()
                    .filter_map(|d| match d.state {
                        DeliveryState::Skipped { reason, .. } => Some(SkippedDelivery {
                            owner: d.owner,
                            reason,
                        }),
                        _ => None,
                    })
                    .collect(),
                Err(e) => {
                    stopped = Some(StopReason::port_failed(Side::Store, &e));
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let mut report = report_from(
            &prepared.batch.id,
            &outcome,
            failed,
            skipped,
            stopped.clone(),
        );
        let settled_now = report.pending == 0 && (before.pending + before.claimed) > 0;
        let finished = self
            .store
            .append_activity(&ActivityEntry {
                community: prepared.batch.community.clone(),
                at: self.clock.now(),
                kind: ActivityKind::BatchFinished {
                    batch: prepared.batch.id.clone(),
                    sent: report.sent,
                    failed: report.failed.len(),
                    pending: report.pending,
                    stopped: stopped.as_ref().map(ToString::to_string),
                },
            })
            .await;
        if let Err(e) = finished {
            // The feed misses this entry; the report still says what was sent.
            if report.stopped.is_none() {
                report.stopped = Some(StopReason::port_failed(Side::Store, &e));
            }
        } else if settled_now
            && report.stopped.is_none()
            && !prepared.batch.resend
            && let Some(to) = prepared.batch.invite.summary_address()
        {
            // The recap lists every recipient: only then is the whole batch read.
            match self.store.deliveries(&prepared.batch.id).await {
                Ok(deliveries) => {
                    report.summary = Some(self.send_summary(&prepared, &to, &deliveries).await);
                }
                Err(e) => report.stopped = Some(StopReason::port_failed(Side::Store, &e)),
            }
        }
        // The send is over: close the transport's connections politely (QUIT on
        // every SMTP connection) rather than leave them to time out. The next send
        // opens new ones. A failure to close changes nothing that was sent.
        let _ = self.transport.close().await;
        Ok(report)
    }

    /// The recap for the Summary address: the message as written (templates, never a
    /// live link) and every recipient with their outcome.
    async fn send_summary(
        &self,
        prepared: &PreparedBatch,
        to: &EmailAddress,
        deliveries: &[Delivery],
    ) -> SummaryOutcome {
        let batch = &prepared.batch;
        // The batch id in groups of eight: written whole, one id in 60 reads to spam
        // filters as a Bitcoin address (SpamAssassin's PDS_BTC_ID).
        let mut text = format!(
            "Owner Access invitations for {}\n\nBatch {}, created {}\n\
             (to resume or retry it, give the id without the spaces)\n\n",
            prepared.community.name,
            spaced_id(batch.id.as_str()),
            prepared.community.format_time(batch.created_at)
        );
        let counts = deliveries
            .iter()
            .fold(DeliveryCounts::default(), |mut c, d| {
                c.add(&d.state);
                c
            });
        text.push_str(&format!(
            "Recipients: {}; sent: {}; failed: {}; skipped: {}.\n\n",
            counts.total(),
            counts.sent,
            counts.failed,
            counts.skipped
        ));
        text.push_str("The message as written\n----------------------\n");
        let body = match (&batch.invite.text_body, &batch.invite.html_body) {
            (Some(text), _) => text.clone(),
            (None, Some(html)) => format!(
                "(the text made from the HTML body)\n{}",
                html_to_text_template(html)
            ),
            (None, None) => String::new(),
        };
        text.push_str(&format!(
            "Subject: {}\n\n{}\n\n",
            batch.invite.subject, body
        ));
        if !batch.invite.attachments.is_empty() {
            let names: Vec<&str> = batch
                .invite
                .attachments
                .iter()
                .map(|a| a.file_name.as_str())
                .collect();
            text.push_str(&format!("Attachments: {}\n\n", names.join(", ")));
        }
        text.push_str("Recipients\n----------\n");
        for d in deliveries {
            let outcome = match &d.state {
                DeliveryState::Sent { .. } => "sent".to_owned(),
                DeliveryState::Failed { error, .. } => format!("failed: {error}"),
                DeliveryState::Skipped { reason, .. } => format!("skipped: {reason}"),
                DeliveryState::Pending | DeliveryState::Claimed { .. } => "pending".to_owned(),
            };
            text.push_str(&format!("{} <{}>: {}\n", d.owner, d.to, outcome));
        }
        let subject = format!(
            "Summary: Owner Access invitations for {}",
            prepared.community.name
        );
        let mut message = Vec::new();
        let id = prepared.message_ids.summary();
        prepared
            .frame
            .write_plain(to, &id, self.clock.now(), &subject, &text, &mut message);
        let envelope = Envelope::new(batch.sender.address.clone(), to.clone()).with_tag(
            crate::transport::DeliveryTag {
                batch: batch.id.clone(),
                owner: None,
                message_id: id.clone(),
            },
        );
        match self.transport.send(&envelope, &message).await {
            Ok(_) => SummaryOutcome::Sent { to: to.to_string() },
            Err(e) => SummaryOutcome::Failed {
                to: to.to_string(),
                error: e.summary(),
            },
        }
    }

    // ----- Resend ---------------------------------------------------------------------

    /// Resends the registration email to one owner: a fresh link (the old one is
    /// revoked when the new message has been accepted and recorded as sent; a resend
    /// that fails or stops leaves it working), with the message of the owner's latest
    /// batch, or the default invitation if there is none.
    ///
    /// # Errors
    /// [`Error::NotEligible`] when the owner cannot be invited (registered, no valid
    /// or a shared address); [`Error::NotFound`] for an unknown owner.
    pub async fn resend(&self, owner: &OwnerId) -> Result<SendReport> {
        self.resend_with(owner, None, RunControl::new()).await
    }

    /// [`resend`](Self::resend) with a message of your own (`invite`, whose selection
    /// is ignored) and a run control.
    pub async fn resend_with(
        &self,
        owner_id: &OwnerId,
        invite: Option<Invite>,
        control: RunControl,
    ) -> Result<SendReport> {
        let owner = self
            .directory
            .owner(owner_id)
            .await
            .map_err(Error::directory)?
            .ok_or_else(|| Error::NotFound {
                what: "owner",
                id: owner_id.to_string(),
            })?;
        let invite = match invite {
            Some(invite) => invite,
            None => self.latest_invite_for(&owner).await?,
        };
        let invite = Invite {
            community: owner.community.clone(),
            selection: Selection::single(owner.id.clone()),
            summary_to: None,
            draft: None,
            ..invite
        };
        let review = self.review(&invite).await?;
        if let Some(excluded) = review.excluded.first() {
            return Err(Error::NotEligible {
                owner: owner.id,
                reason: excluded.reason.clone(),
            });
        }
        if !review.is_sendable() {
            return Err(Error::InvalidInvite {
                problems: review.problems,
            });
        }
        let (batch, _, recipients) = self.store_batch(review, true).await?;
        self.run_batch(batch, control, false, Some(all_pending(recipients)))
            .await
    }

    /// The invite a [`resend`](Self::resend) to this owner sends: the message of
    /// the owner's latest batch with the From and portal URL that batch was sent
    /// with, or the default invitation if there is none; selecting only the owner.
    /// Edit it and pass it to [`resend_with`](Self::resend_with) to change a part.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown owner.
    pub async fn compose_resend(&self, owner: &OwnerId) -> Result<Invite> {
        let owner = self
            .directory
            .owner(owner)
            .await
            .map_err(Error::directory)?
            .ok_or_else(|| Error::NotFound {
                what: "owner",
                id: owner.to_string(),
            })?;
        let invite = self.latest_invite_for(&owner).await?;
        Ok(Invite {
            selection: Selection::single(owner.id),
            summary_to: None,
            draft: None,
            ..invite
        })
    }

    async fn latest_invite_for(&self, owner: &Owner) -> Result<Invite> {
        for batch in self
            .store
            .batches(&owner.community)
            .await
            .map_err(Error::store)?
        {
            if batch.invite.selection.contains(&owner.id) {
                // The batch's own From and portal URL: an invite stored before they
                // travelled with it has none.
                return Ok(Invite {
                    from: Some(batch.sender.to_string()),
                    portal_url: Some(batch.portal_url),
                    ..batch.invite
                });
            }
        }
        self.compose(&owner.community, &Selection::single(owner.id.clone()))
            .await
    }

    // ----- Tokens ---------------------------------------------------------------------

    /// Checks a registration token without using it: for the page that shows the
    /// registration form (mail scanners open links, so showing must not consume).
    ///
    /// # Errors
    /// [`Error::InvalidToken`] for empty, malformed, unknown, expired, revoked and used
    /// tokens alike (one public message; the reason is for logs).
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken> {
        self.settle_owed().await?;
        let record = self.live_token(token).await?;
        let owner = self
            .directory
            .owner(&record.owner)
            .await
            .map_err(Error::directory)?
            .ok_or(Error::InvalidToken {
                reason: TokenRejection::Unknown,
            })?;
        check_holder(&owner, &record)?;
        Ok(VerifiedToken {
            owner,
            expires_at: record.expires_at,
        })
    }

    async fn live_token(&self, token: &str) -> Result<TokenRecord> {
        let token = token.trim();
        if !looks_like_token(token) {
            return Err(Error::InvalidToken {
                reason: TokenRejection::Unknown,
            });
        }
        let record = self
            .store
            .token(&hash_token(token))
            .await
            .map_err(Error::store)?
            .ok_or(Error::InvalidToken {
                reason: TokenRejection::Unknown,
            })?;
        record
            .check(self.clock.now())
            .map_err(|reason| Error::InvalidToken { reason })?;
        Ok(record)
    }

    /// Completes registration with a token: once. Of two calls at once with one token
    /// (or with two links of one owner), exactly one answers with the registration.
    ///
    /// Three steps across the two ports, none inside the other's transaction: the
    /// store spends the token, revokes the owner's other links and records the
    /// registration owed; the directory marks the owner registered (refusing when
    /// their email is no longer the address the link was sent to); the store clears
    /// the owed registration and appends the Registered entry. Then the call takes the
    /// answer ([`InvitationStore::answer_redeem`]). A crash between the steps leaves
    /// the registration owed: the next redeem, verify, review or send completes it,
    /// and the next redeem of the same link answers with the registration (the first
    /// call never answered). A second call racing a live first one finds the answer
    /// taken, or takes it first and the first call answers `AlreadyUsed`: either way,
    /// one `Ok`.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] as for [`verify`](Self::verify); a link whose owner's
    /// email changed since it was sent is `Revoked`; a link whose redeem was already
    /// answered is `AlreadyUsed`.
    pub async fn redeem(&self, token: &str) -> Result<Registration> {
        self.settle_owed().await?;
        let record = match self.live_token(token).await {
            Ok(record) => record,
            Err(Error::InvalidToken {
                reason: TokenRejection::AlreadyUsed,
            }) => return self.answer_spent(&hash_token(token.trim())).await,
            Err(e) => return Err(e),
        };
        let owner = self
            .directory
            .owner(&record.owner)
            .await
            .map_err(Error::directory)?
            .ok_or(Error::InvalidToken {
                reason: TokenRejection::Unknown,
            })?;
        check_holder(&owner, &record)?;
        let now = self.clock.now();
        let token = match self
            .store
            .redeem_token(&record.hash, now)
            .await
            .map_err(Error::store)?
        {
            RedeemOutcome::Redeemed { token } => token,
            RedeemOutcome::Rejected(TokenRejection::AlreadyUsed) => {
                return self.answer_spent(&record.hash).await;
            }
            RedeemOutcome::Rejected(reason) => return Err(Error::InvalidToken { reason }),
        };
        let owed = OwedRegistration {
            token: token.hash,
            owner: token.owner.clone(),
            batch: token.batch.clone(),
            sent_to: token.sent_to.clone(),
            at: now,
        };
        match self.settle(&owed).await? {
            Marked::Registered(owner) => self.take_answer(&owed.token, *owner, now).await,
            Marked::AddressChanged => Err(Error::InvalidToken {
                reason: TokenRejection::Revoked,
            }),
            Marked::UnknownOwner => Err(Error::InvalidToken {
                reason: TokenRejection::Unknown,
            }),
        }
    }

    /// A redeem of a spent link: the registration when its first redeem never
    /// answered (it crashed after spending the token) and this call takes the answer;
    /// otherwise `AlreadyUsed`. The registration owed, if any, was completed by the
    /// caller's `settle_owed`.
    async fn answer_spent(&self, hash: &TokenHash) -> Result<Registration> {
        let used = Error::InvalidToken {
            reason: TokenRejection::AlreadyUsed,
        };
        let Some(record) = self.store.token(hash).await.map_err(Error::store)? else {
            return Err(used);
        };
        let TokenState::Redeemed { at } = record.state else {
            return Err(used);
        };
        let Some(owner) = self
            .directory
            .owner(&record.owner)
            .await
            .map_err(Error::directory)?
        else {
            return Err(Error::InvalidToken {
                reason: TokenRejection::Unknown,
            });
        };
        // The first call's mark was refused (the email changed): no registration.
        if !owner.is_registered() {
            return Err(Error::InvalidToken {
                reason: TokenRejection::Revoked,
            });
        }
        self.take_answer(hash, owner, at).await
    }

    /// The registration, when this call is the one that answers for the spent token.
    async fn take_answer(
        &self,
        hash: &TokenHash,
        owner: Owner,
        at: Timestamp,
    ) -> Result<Registration> {
        if self
            .store
            .answer_redeem(hash, self.clock.now())
            .await
            .map_err(Error::store)?
        {
            Ok(Registration { owner, at })
        } else {
            Err(Error::InvalidToken {
                reason: TokenRejection::AlreadyUsed,
            })
        }
    }

    /// Completes every registration owed (normally none): what verify, review, the
    /// roster and a send do first, so that an owner whose redeem crashed midway counts
    /// as registered and is never sent another invitation.
    async fn settle_owed(&self) -> Result<()> {
        for owed in self
            .store
            .owed_registrations()
            .await
            .map_err(Error::store)?
        {
            self.settle(&owed).await?;
        }
        Ok(())
    }

    /// Steps 2 and 3 of a redeem: the directory's mark, then the store's settlement
    /// (with the Registered entry when the mark held; at most once, whoever settles).
    async fn settle(&self, owed: &OwedRegistration) -> Result<Marked> {
        let marked = self
            .directory
            .mark_registered(&owed.owner, &owed.sent_to, owed.at)
            .await
            .map_err(Error::directory)?;
        let entry = match &marked {
            Marked::Registered(owner) => Some(ActivityEntry {
                community: owner.community.clone(),
                at: owed.at,
                kind: ActivityKind::Registered {
                    owner: owner.id.clone(),
                    batch: owed.batch.clone(),
                },
            }),
            Marked::AddressChanged | Marked::UnknownOwner => None,
        };
        self.store
            .settle_registration(&owed.token, entry.as_ref())
            .await
            .map_err(Error::store)?;
        Ok(marked)
    }

    // ----- Activity ---------------------------------------------------------------------

    /// A page of the community's activity feed, newest first.
    pub async fn activity(
        &self,
        community: &CommunityId,
        page: Page,
    ) -> Result<Vec<ActivityEntry>> {
        self.store
            .activity(community, page)
            .await
            .map_err(Error::store)
    }
}

/// Whether `owner` may use a link of theirs: not registered, and their primary email
/// still the address the link was sent to (by `delivered_key`, computed now).
fn check_holder(owner: &Owner, record: &TokenRecord) -> Result<()> {
    if owner.is_registered() {
        return Err(Error::InvalidToken {
            reason: TokenRejection::AlreadyUsed,
        });
    }
    let sent_to = delivered_key(&record.sent_to);
    if sent_to.is_empty() || owner.email_key().as_deref() != Some(sent_to.as_str()) {
        return Err(Error::InvalidToken {
            reason: TokenRejection::Revoked,
        });
    }
    Ok(())
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

/// An id in groups of eight characters, the first group after its `b-` prefix:
/// `b-1f3a9c2e 4d5b0c1d ...`.
fn spaced_id(id: &str) -> String {
    let (prefix, rest) = id.split_at(id.find('-').map_or(0, |i| i + 1));
    let groups: Vec<String> = rest
        .chars()
        .collect::<Vec<_>>()
        .chunks(8)
        .map(|c| c.iter().collect())
        .collect();
    format!("{prefix}{}", groups.join(" "))
}

/// The counts of a batch just stored: every delivery pending.
fn all_pending(recipients: usize) -> DeliveryCounts {
    DeliveryCounts {
        pending: recipients,
        ..DeliveryCounts::default()
    }
}

fn report_from(
    batch: &BatchId,
    outcome: &RunOutcome,
    failed: Vec<FailedDelivery>,
    skipped: Vec<SkippedDelivery>,
    stopped: Option<StopReason>,
) -> SendReport {
    let counts = &outcome.counts;
    // Sent but not recorded: they went out, so they count as sent; the store still
    // has them claimed.
    let unrecorded = outcome.unrecorded_sent;
    SendReport {
        batch: Some(batch.clone()),
        recipients: counts.total(),
        sent: counts.sent + unrecorded,
        unrecorded,
        pending: (counts.pending + counts.claimed).saturating_sub(unrecorded),
        failed,
        skipped,
        excluded: Vec::new(),
        stopped,
        summary: None,
    }
}
