//! The send engine: claims a batch's deliveries, renders and sends each with bounded
//! concurrency, retries transient errors with backoff, records every outcome, and stops
//! the run (leaving the rest pending) on a fatal error, on a run of connection failures,
//! or when the host asks.
//!
//! Nothing is buffered per batch: deliveries are claimed in small chunks as workers
//! free up, each message is built, sent and dropped; shared parts (compiled templates,
//! encoded attachments) are prepared once per run.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;

use crate::clock::Clock;
use crate::domain::{
    Batch, BatchId, Community, Delivery, DeliveryOutcome, Mailbox, Owner, OwnerId, Timestamp,
    TokenRecord, TokenState,
};
use crate::error::InvalidSetting;
use crate::mime::{MessageFrame, MessageIds};
use crate::progress::{Progress, RunControl, StopReason};
use crate::repository::{OwnerRepository, RepositoryError};
use crate::template::{CompiledTemplate, MergeFields};
use crate::token::{RegistrationToken, registration_link};
use crate::transport::{DeliveryTag, Envelope, MailTransport, TransportError};

/// How transient errors are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Transport attempts per delivery in one run, the first included (default 3).
    pub max_attempts: u32,
    /// The wait after the first failure (default 1 s); it doubles after each further
    /// failure, up to `max_backoff`, and is jittered (between half and all of it) so
    /// parallel workers do not retry in lock step.
    pub initial_backoff: Duration,
    /// The longest wait (default 60 s).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based), before jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// How a batch is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct SendOptions {
    /// Messages in flight at once (default 8). An SMTP transport typically opens as
    /// many connections.
    pub concurrency: usize,
    /// At most this many messages started per second (default `None`: no limit). See
    /// [`validate`](Self::validate) for the range.
    pub rate_per_second: Option<f64>,
    /// Retries of transient errors.
    pub retry: RetryPolicy,
    /// Stop the run when this many deliveries in a row exhausted their retries on
    /// connection errors (default 3): the server is unreachable, and failing every
    /// remaining owner would be wrong. Those deliveries go back to pending.
    pub unreachable_after: usize,
    /// A claim older than this is presumed abandoned by a dead process and may be
    /// taken over (default 10 minutes).
    /// [`OwnerAccess::resume_after_crash`](crate::OwnerAccess::resume_after_crash)
    /// takes over every claim at once.
    pub claim_lease: Duration,
    /// Outcomes are recorded in groups (one repository call, one commit) of at most
    /// this many (default 32), or sooner when the oldest has waited `outcome_delay`.
    /// A group is recorded while the next messages go out; new messages wait when
    /// four groups' worth of outcomes are not yet recorded. After a crash, a message
    /// whose outcome was not yet recorded is sent again by `resume` with the same
    /// Message-ID, so this also bounds the duplicates a crash can cause: fewer than
    /// `4 × outcome_group + concurrency`. A group of 1 records every outcome on its
    /// own.
    pub outcome_group: usize,
    /// The longest an outcome waits for its group (default 100 ms).
    pub outcome_delay: Duration,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            rate_per_second: None,
            retry: RetryPolicy::default(),
            unreachable_after: 3,
            claim_lease: Duration::from_secs(600),
            outcome_group: 32,
            outcome_delay: Duration::from_millis(100),
        }
    }
}

impl RetryPolicy {
    /// The most attempts per delivery in one run.
    pub const MAX_ATTEMPTS: u32 = 100;
    /// The longest wait between two attempts.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

    /// Checks the policy: `max_attempts` from 1 to [`MAX_ATTEMPTS`](Self::MAX_ATTEMPTS),
    /// `initial_backoff` at most `max_backoff`, which is at most
    /// [`MAX_BACKOFF`](Self::MAX_BACKOFF).
    ///
    /// # Errors
    /// [`InvalidSetting`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(1..=Self::MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(InvalidSetting::new(
                "retry.max_attempts",
                self.max_attempts,
                format!(
                    "from 1 to {} (the first attempt included)",
                    Self::MAX_ATTEMPTS
                ),
            ));
        }
        if self.max_backoff > Self::MAX_BACKOFF {
            return Err(InvalidSetting::new(
                "retry.max_backoff",
                self.max_backoff,
                format!("at most {:?}", Self::MAX_BACKOFF),
            ));
        }
        if self.initial_backoff > self.max_backoff {
            return Err(InvalidSetting::new(
                "retry.initial_backoff",
                self.initial_backoff,
                format!("at most retry.max_backoff ({:?})", self.max_backoff),
            ));
        }
        Ok(())
    }
}

impl SendOptions {
    /// The most messages in flight at once.
    pub const MAX_CONCURRENCY: usize = 1024;
    /// The slowest rate: one message an hour. Slower is not a bulk send, and the wait
    /// for a slot must stay a time the clock can add.
    pub const MIN_RATE_PER_SECOND: f64 = 1.0 / 3600.0;
    /// The fastest rate a limit may name (for no limit, `None`).
    pub const MAX_RATE_PER_SECOND: f64 = 1_000_000.0;
    /// The longest claim lease.
    pub const MAX_CLAIM_LEASE: Duration = Duration::from_secs(7 * 24 * 3600);
    /// The largest group of outcomes recorded at once.
    pub const MAX_OUTCOME_GROUP: usize = 10_000;
    /// The longest an outcome may wait for its group.
    pub const MAX_OUTCOME_DELAY: Duration = Duration::from_secs(60);

    /// Checks every setting against its range: `concurrency` from 1 to
    /// [`MAX_CONCURRENCY`](Self::MAX_CONCURRENCY); `rate_per_second` `None` (no limit)
    /// or a finite number from [`MIN_RATE_PER_SECOND`](Self::MIN_RATE_PER_SECOND) to
    /// [`MAX_RATE_PER_SECOND`](Self::MAX_RATE_PER_SECOND) (zero, negative, NaN and
    /// infinite rates are refused); the retry policy ([`RetryPolicy::validate`]);
    /// `unreachable_after` at least 1; `claim_lease` from 1 s to
    /// [`MAX_CLAIM_LEASE`](Self::MAX_CLAIM_LEASE); `outcome_group` from 1 to
    /// [`MAX_OUTCOME_GROUP`](Self::MAX_OUTCOME_GROUP); `outcome_delay` at most
    /// [`MAX_OUTCOME_DELAY`](Self::MAX_OUTCOME_DELAY).
    ///
    /// [`OwnerAccessBuilder::build`](crate::OwnerAccessBuilder::build) calls it, so a
    /// service only ever holds options that passed: nothing is stored or sent with
    /// options out of range.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(1..=Self::MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(InvalidSetting::new(
                "concurrency",
                self.concurrency,
                format!("from 1 to {}", Self::MAX_CONCURRENCY),
            ));
        }
        if let Some(rate) = self.rate_per_second
            && !(Self::MIN_RATE_PER_SECOND..=Self::MAX_RATE_PER_SECOND).contains(&rate)
        {
            return Err(InvalidSetting::new(
                "rate_per_second",
                rate,
                format!(
                    "a number of messages per second from 1/3600 (one an hour) to {}",
                    Self::MAX_RATE_PER_SECOND
                ),
            ));
        }
        self.retry.validate()?;
        if self.unreachable_after == 0 {
            return Err(InvalidSetting::new(
                "unreachable_after",
                self.unreachable_after,
                "at least 1",
            ));
        }
        if !(Duration::from_secs(1)..=Self::MAX_CLAIM_LEASE).contains(&self.claim_lease) {
            return Err(InvalidSetting::new(
                "claim_lease",
                self.claim_lease,
                format!("from 1s to {:?}", Self::MAX_CLAIM_LEASE),
            ));
        }
        if !(1..=Self::MAX_OUTCOME_GROUP).contains(&self.outcome_group) {
            return Err(InvalidSetting::new(
                "outcome_group",
                self.outcome_group,
                format!("from 1 to {}", Self::MAX_OUTCOME_GROUP),
            ));
        }
        if self.outcome_delay > Self::MAX_OUTCOME_DELAY {
            return Err(InvalidSetting::new(
                "outcome_delay",
                self.outcome_delay,
                format!("at most {:?}", Self::MAX_OUTCOME_DELAY),
            ));
        }
        Ok(())
    }
}

/// Deliveries claimed, and their tokens stored, in one go. Each claim is a few
/// repository calls and commits whose cost hardly depends on their size, so large
/// chunks spread it thin: with SQLite, 256 instead of 32 cut the time of a
/// 7,800-message send by a fifth (`benches/e2e/run.sh 10000`). Claims of a stopped run
/// that were never started are given back.
const CLAIM_CHUNK: usize = 256;

/// How many groups of outcomes may wait to be recorded (one being recorded, the
/// others filling) before new messages wait. One was too few: a group's commit waits
/// for the claim in progress, and with SQLite the senders then stood idle for a tenth
/// of the run (`benches/e2e/run.sh 10000`); four leave them idle under 2%.
const UNRECORDED_GROUPS: usize = 4;

/// Everything one run shares across deliveries, prepared once.
pub(crate) struct PreparedBatch {
    pub batch: Batch,
    pub template: CompiledTemplate,
    pub frame: MessageFrame,
    /// The community as the batch runs: its name, time zone and branding.
    pub community: Community,
    /// The merge field `reply_to`: the batch's Reply-To, or empty.
    pub reply_to: String,
    /// The batch's Message-IDs, per owner.
    pub message_ids: MessageIds,
    /// The encoded attachments' size, to size each message's buffer once.
    pub attachments_len: usize,
}

impl PreparedBatch {
    fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.batch.token_ttl_seconds)
    }
}

/// A claimed delivery, checked and with its token stored: ready to render and send.
struct Ready {
    delivery: Delivery,
    owner: Owner,
    token: RegistrationToken,
    issued_at: Timestamp,
    expires_at: Timestamp,
}

/// What a claimed chunk turned into.
struct Chunk {
    ready: Vec<Ready>,
    /// Deliveries that may no longer be sent (the owner is gone, registered, or has
    /// another address now), with the reason: they fail at once.
    skipped: Vec<(OwnerId, String)>,
}

/// How one delivery ended in this run; recorded later, with others.
enum Settled {
    Sent {
        owner: OwnerId,
        expires_at: Timestamp,
        attempts: u32,
    },
    Failed {
        owner: OwnerId,
        error: String,
        attempts: u32,
    },
    /// Retries exhausted on connection errors: held back, recorded as failed only if
    /// the run goes on.
    Unreachable {
        owner: OwnerId,
        error: String,
        attempts: u32,
    },
    /// A fatal error: the delivery goes back to pending.
    Fatal { owner: OwnerId, error: String },
}

/// Outcomes waiting to be recorded in one repository call.
#[derive(Default)]
struct Outcomes {
    items: Vec<(OwnerId, DeliveryOutcome)>,
    events: Vec<Progress>,
    since: Option<tokio::time::Instant>,
}

impl Outcomes {
    fn push(&mut self, owner: OwnerId, outcome: DeliveryOutcome) {
        let event = match &outcome {
            DeliveryOutcome::Sent { .. } => Progress::Sent {
                owner: owner.clone(),
            },
            DeliveryOutcome::Failed { error, .. } => Progress::Failed {
                owner: owner.clone(),
                error: error.clone(),
            },
        };
        self.since.get_or_insert_with(tokio::time::Instant::now);
        self.items.push((owner, outcome));
        self.events.push(event);
    }

    fn failed(&mut self, owner: OwnerId, error: String, attempts: u32) {
        self.push(owner, DeliveryOutcome::Failed { error, attempts });
    }

    /// Takes the waiting group, leaving this one empty.
    fn take(&mut self) -> Outcomes {
        std::mem::take(self)
    }
}

/// A group of outcomes after its repository call.
struct Recorded {
    events: Vec<Progress>,
    result: Result<(), RepositoryError>,
}

pub(crate) struct Engine<'a> {
    pub repo: &'a dyn OwnerRepository,
    pub transport: &'a dyn MailTransport,
    pub clock: &'a dyn Clock,
    pub options: &'a SendOptions,
    pub control: &'a RunControl,
}

struct RunState {
    stop: Mutex<Option<StopReason>>,
    error: Mutex<Option<RepositoryError>>,
    next_slot: Mutex<Option<Timestamp>>,
}

impl RunState {
    fn stop_with(&self, reason: StopReason) {
        let mut stop = self.stop.lock().expect("run state");
        if stop.is_none() {
            *stop = Some(reason);
        }
    }

    fn fail(&self, error: RepositoryError) {
        let mut slot = self.error.lock().expect("run state");
        if slot.is_none() {
            *slot = Some(error);
        }
    }

    fn is_stopping(&self, control: &RunControl) -> bool {
        if control.stop.is_stopped() {
            self.stop_with(StopReason::Cancelled);
        }
        self.stop.lock().expect("run state").is_some()
            || self.error.lock().expect("run state").is_some()
    }
}

/// What a run did.
pub(crate) struct RunOutcome {
    pub stopped: Option<StopReason>,
}

impl Engine<'_> {
    /// Sends what is claimable in the batch until nothing is left or the run stops.
    pub async fn run(
        &self,
        prepared: &PreparedBatch,
        stale_before: Timestamp,
    ) -> Result<RunOutcome, RepositoryError> {
        let batch_id = &prepared.batch.id;
        let counts = self.repo.delivery_counts(batch_id).await?;
        self.control.emit(Progress::Queued {
            batch: batch_id.clone(),
            pending: counts.pending + counts.claimed,
        });
        let state = RunState {
            stop: Mutex::new(None),
            error: Mutex::new(None),
            next_slot: Mutex::new(None),
        };
        let concurrency = self.options.concurrency.max(1);
        let chunk = CLAIM_CHUNK;
        let group = self.options.outcome_group.max(1);

        // A run never takes over its own claims, even when the clock stands still or
        // steps back: it remembers what it took.
        let stale_before = stale_before.min(self.clock.now() - Duration::from_micros(1));
        let mut queue: VecDeque<Ready> = VecDeque::new();
        let mut taken: HashSet<OwnerId> = HashSet::new();
        let mut exhausted = false;
        // The next chunk is claimed (and its tokens stored) while the current one is
        // being sent, so workers never wait on the repository. Boxed futures keep the
        // run `Send` for hosts that spawn it.
        let mut claiming: Option<BoxFuture<'_, Result<Chunk, RepositoryError>>> = None;
        // Outcomes are recorded while the next messages go out: the engine never waits
        // on a commit unless a whole further group is waiting behind it.
        let mut recording: Option<BoxFuture<'_, Recorded>> = None;
        let mut recording_len = 0usize;
        let mut in_flight: FuturesUnordered<BoxFuture<'_, Settled>> = FuturesUnordered::new();
        let mut outcomes = Outcomes::default();
        let mut held: Vec<(OwnerId, String, u32)> = Vec::new();
        let mut to_release: Vec<OwnerId> = Vec::new();
        loop {
            let stopping = state.is_stopping(self.control);
            // One chunk is kept in reserve, so the workers never wait on a claim.
            if !stopping && !exhausted && claiming.is_none() && queue.len() < chunk {
                claiming = Some(Box::pin(self.claim_chunk(prepared, chunk, stale_before)));
            }
            // Outcomes not yet recorded are what a crash would send again: new
            // messages wait while there are `UNRECORDED_GROUPS` groups of them.
            let backlogged = recording_len + outcomes.items.len() >= group * UNRECORDED_GROUPS;
            while !stopping && !backlogged && in_flight.len() < concurrency {
                let Some(ready) = queue.pop_front() else {
                    break;
                };
                in_flight.push(Box::pin(self.deliver(prepared, &state, ready)));
            }
            let idle = in_flight.is_empty() && claiming.is_none();
            let due = outcomes
                .since
                .is_some_and(|t| t.elapsed() >= self.options.outcome_delay);
            if recording.is_none()
                && !outcomes.items.is_empty()
                && (outcomes.items.len() >= group || due || idle)
            {
                recording_len = outcomes.items.len();
                recording = Some(Box::pin(self.record(batch_id, outcomes.take())));
            }
            if idle && recording.is_none() {
                break;
            }
            let deadline = outcomes
                .since
                .filter(|_| recording.is_none())
                .map(|t| t + self.options.outcome_delay);
            tokio::select! {
                biased;
                Some(settled) = in_flight.next(), if !in_flight.is_empty() => match settled {
                    Settled::Sent { owner, expires_at, attempts } => {
                        Self::give_up_held(&mut held, &mut outcomes);
                        outcomes.push(owner, DeliveryOutcome::Sent { expires_at, attempts });
                    }
                    Settled::Failed { owner, error, attempts } => {
                        Self::give_up_held(&mut held, &mut outcomes);
                        outcomes.failed(owner, error, attempts);
                    }
                    Settled::Fatal { owner, error } => {
                        to_release.push(owner);
                        state.stop_with(StopReason::Fatal { error });
                    }
                    Settled::Unreachable { owner, error, attempts } => {
                        held.push((owner, error.clone(), attempts));
                        if held.len() >= self.options.unreachable_after.max(1) {
                            state.stop_with(StopReason::Unreachable { error });
                        }
                    }
                },
                claimed = async { claiming.as_mut().expect("guarded").await }, if claiming.is_some() => {
                    claiming = None;
                    match claimed {
                        Ok(chunk) => {
                            let mut fresh = 0usize;
                            for (owner, reason) in chunk.skipped {
                                if taken.insert(owner.clone()) {
                                    fresh += 1;
                                    outcomes.failed(owner, reason, 0);
                                }
                            }
                            for ready in chunk.ready {
                                if taken.insert(ready.delivery.owner.clone()) {
                                    fresh += 1;
                                    queue.push_back(ready);
                                }
                            }
                            if fresh == 0 {
                                // Nothing new came back (none left, or only our own
                                // claims): the batch is exhausted for this run.
                                exhausted = true;
                            }
                        }
                        Err(e) => state.fail(e),
                    }
                },
                recorded = async { recording.as_mut().expect("guarded").await }, if recording.is_some() => {
                    recording = None;
                    recording_len = 0;
                    self.report(recorded, &state);
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {}
            }
        }

        let stopped = state.stop.lock().expect("run state").clone();
        if stopped.is_some() {
            // The server looked unreachable: those owners are not failed, they wait.
            to_release.extend(held.drain(..).map(|(owner, _, _)| owner));
        } else {
            Self::give_up_held(&mut held, &mut outcomes);
        }
        self.flush(batch_id, &mut outcomes, &state).await;
        // Claimed but never started (the run stopped), or stopped by a fatal error:
        // give them back.
        to_release.extend(queue.drain(..).map(|r| r.delivery.owner));
        if !to_release.is_empty()
            && let Err(e) = self.repo.release_deliveries(batch_id, &to_release).await
        {
            state.fail(e);
        }
        if let Some(error) = state.error.lock().expect("run state").take() {
            return Err(error);
        }
        if let Some(reason) = &stopped {
            self.control.emit(Progress::Stopped {
                reason: reason.clone(),
            });
        }
        let counts = self.repo.delivery_counts(batch_id).await?;
        self.control.emit(Progress::Finished {
            sent: counts.sent,
            failed: counts.failed,
            pending: counts.pending + counts.claimed,
        });
        Ok(RunOutcome { stopped })
    }

    /// Held connection failures become failures: the run went on, so the server was
    /// reachable after all and these owners had their retries.
    fn give_up_held(held: &mut Vec<(OwnerId, String, u32)>, outcomes: &mut Outcomes) {
        for (owner, error, attempts) in held.drain(..) {
            outcomes.failed(owner, error, attempts);
        }
    }

    /// Records a group of outcomes in one repository call; their events are reported
    /// once it is committed.
    async fn record(&self, batch: &BatchId, group: Outcomes) -> Recorded {
        let result = self
            .repo
            .record_deliveries(batch, &group.items, self.clock.now())
            .await;
        Recorded {
            events: group.events,
            result,
        }
    }

    /// Records the waiting outcomes now, then reports them.
    async fn flush(&self, batch: &BatchId, outcomes: &mut Outcomes, state: &RunState) {
        if outcomes.items.is_empty() {
            return;
        }
        let recorded = self.record(batch, outcomes.take()).await;
        self.report(recorded, state);
    }

    /// Reports a recorded group's events, or stops the run on the repository's error.
    fn report(&self, recorded: Recorded, state: &RunState) {
        match recorded.result {
            Ok(()) => recorded
                .events
                .into_iter()
                .for_each(|e| self.control.emit(e)),
            Err(e) => state.fail(e),
        }
    }

    /// Claims up to `limit` deliveries, loads their owners, and stores a fresh token
    /// for each one that may still be sent, all in a few repository calls.
    async fn claim_chunk(
        &self,
        prepared: &PreparedBatch,
        limit: usize,
        stale_before: Timestamp,
    ) -> Result<Chunk, RepositoryError> {
        let now = self.clock.now();
        let claimed = self
            .repo
            .claim_deliveries(&prepared.batch.id, limit, now, stale_before)
            .await?;
        let mut chunk = Chunk {
            ready: Vec::with_capacity(claimed.len()),
            skipped: Vec::new(),
        };
        if claimed.is_empty() {
            return Ok(chunk);
        }
        let ids: Vec<OwnerId> = claimed.iter().map(|d| d.owner.clone()).collect();
        let mut owners: HashMap<OwnerId, Owner> = self
            .repo
            .owners(&ids)
            .await?
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect();
        let issued_at = self.clock.now();
        let expires_at = issued_at + prepared.token_ttl();
        let mut records = Vec::with_capacity(claimed.len());
        for delivery in claimed {
            let owner = owners.remove(&delivery.owner);
            if let Some(reason) = Self::skip_reason(&delivery, owner.as_ref()) {
                chunk.skipped.push((delivery.owner, reason.to_owned()));
                continue;
            }
            let owner = owner.expect("checked by skip_reason");
            let token = RegistrationToken::generate();
            records.push(TokenRecord {
                hash: token.hash(),
                owner: owner.id.clone(),
                batch: prepared.batch.id.clone(),
                issued_at,
                expires_at,
                state: TokenState::Live,
            });
            chunk.ready.push(Ready {
                delivery,
                owner,
                token,
                issued_at,
                expires_at,
            });
        }
        if !records.is_empty() {
            self.repo.issue_tokens(&records).await?;
        }
        Ok(chunk)
    }

    /// Why an owner may no longer be sent to, checked at send time (the batch may be
    /// old: the owner may have registered or changed address since).
    fn skip_reason(delivery: &Delivery, owner: Option<&Owner>) -> Option<&'static str> {
        let Some(owner) = owner else {
            return Some("skipped: the owner no longer exists");
        };
        if owner.is_registered() {
            return Some("skipped: the owner registered before the message was sent");
        }
        if owner.email_key().as_deref() != Some(delivery.to.normalized()) {
            return Some("skipped: the owner's primary email changed after the batch was created");
        }
        None
    }

    /// Renders, builds and sends one message, retrying transient errors. Touches no
    /// repository: the outcome is recorded by the run, grouped with others.
    async fn deliver(&self, prepared: &PreparedBatch, state: &RunState, ready: Ready) -> Settled {
        let Ready {
            delivery,
            owner,
            token,
            issued_at,
            expires_at,
        } = ready;
        let batch_id = &prepared.batch.id;
        let fields = MergeFields {
            first_name: owner.first_name.clone(),
            last_name: owner.last_name.clone(),
            full_name: owner.full_name(),
            property_address: owner.property_address.clone(),
            community_name: prepared.community.name.clone(),
            registration_url: registration_link(&prepared.batch.portal_url, &token),
            expires_on: prepared.community.format_time(expires_at),
            portal_url: prepared.batch.portal_url.clone(),
            reply_to: prepared.reply_to.clone(),
            logo_url: prepared
                .community
                .branding
                .logo_url()
                .unwrap_or_default()
                .to_owned(),
            accent_color: prepared
                .community
                .branding
                .accent_color_or_default()
                .to_owned(),
        };
        let parts = match prepared.template.render(&fields) {
            Ok(parts) => parts,
            Err(problem) => {
                return Settled::Failed {
                    owner: owner.id,
                    error: problem.to_string(),
                    attempts: 0,
                };
            }
        };
        let to = Mailbox::new(Some(&fields.full_name), delivery.to.clone()).unwrap_or_else(|_| {
            Mailbox {
                name: None,
                address: delivery.to.clone(),
            }
        });
        let id = prepared.message_ids.for_owner(&owner.id);
        // Sized for the encoded attachments up front: growing a 300 KB message by
        // doubling costs several copies and fresh pages per message.
        let mut bytes = Vec::with_capacity(8192 + prepared.attachments_len);
        prepared
            .frame
            .write_message(&to, &id, issued_at, &parts, &mut bytes);
        drop(parts);

        let envelope = Envelope::new(prepared.batch.sender.address.clone(), delivery.to.clone())
            .with_tag(DeliveryTag {
                batch: batch_id.clone(),
                owner: Some(owner.id.clone()),
                message_id: id.clone(),
            });
        let retry = &self.options.retry;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.pace(state).await;
            match self.transport.send(&envelope, &bytes).await {
                Ok(_) => {
                    return Settled::Sent {
                        owner: owner.id,
                        expires_at,
                        attempts: attempt,
                    };
                }
                Err(e) if e.is_fatal() => {
                    return Settled::Fatal {
                        owner: owner.id,
                        error: e.summary(),
                    };
                }
                Err(e) if e.is_transient() && attempt < retry.max_attempts.max(1) => {
                    let delay = jitter(retry.backoff(attempt));
                    self.control.emit(Progress::Retrying {
                        owner: owner.id.clone(),
                        attempt,
                        delay,
                        error: e.summary(),
                    });
                    self.clock.sleep(delay).await;
                }
                Err(e) if e.is_transient() && e.connection => {
                    return Settled::Unreachable {
                        owner: owner.id,
                        error: e.summary(),
                        attempts: attempt,
                    };
                }
                Err(e) => {
                    return Settled::Failed {
                        owner: owner.id,
                        error: failure_text(&e),
                        attempts: attempt,
                    };
                }
            }
        }
    }

    /// Waits for the next slot under the rate limit, if there is one.
    async fn pace(&self, state: &RunState) {
        let Some(rate) = self.options.rate_per_second.filter(|r| *r > 0.0) else {
            return;
        };
        // Options are validated before a send, so the interval is at most an hour; the
        // bound keeps a rate that slipped past from panicking in the clock arithmetic.
        let interval = Duration::try_from_secs_f64(1.0 / rate)
            .unwrap_or(Duration::MAX)
            .min(Duration::from_secs_f64(
                1.0 / SendOptions::MIN_RATE_PER_SECOND,
            ));
        let wait = {
            let now = self.clock.now();
            let mut next = state.next_slot.lock().expect("run state");
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + interval);
            slot - now
        };
        if !wait.is_zero() {
            self.clock.sleep(wait).await;
        }
    }
}

fn failure_text(error: &TransportError) -> String {
    if error.is_transient() {
        format!("retries exhausted: {}", error.summary())
    } else {
        error.summary()
    }
}

/// Between half and all of `delay`, from the OS random source.
fn jitter(delay: Duration) -> Duration {
    let mut byte = [0u8; 2];
    if getrandom::fill(&mut byte).is_err() {
        return delay;
    }
    let fraction = 0.5 + f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX) / 2.0;
    delay.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
        };
        let waits: Vec<u64> = (1..=5).map(|a| policy.backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
    }

    #[test]
    fn jitter_stays_between_half_and_all() {
        for _ in 0..200 {
            let d = jitter(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000));
        }
    }
}
