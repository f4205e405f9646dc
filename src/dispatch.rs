//! The send engine: claims a batch's deliveries, renders and sends each with bounded
//! concurrency, retries transient errors with backoff, records every outcome, and stops
//! the run (leaving the rest pending) on a fatal error, on a run of connection failures,
//! or when the host asks.
//!
//! Each run is a sender with an id of its own; its claims are leases it renews while
//! it works (one repository call for all of them, every quarter of a lease), and it
//! starts a message only on a claim renewed recently enough that no other sender can
//! have taken it. When the rest of the batch is held by other senders, the run waits
//! for their leases to run out, or for them to settle it, and so ends only when the
//! batch is settled or it stops with a reason.
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
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::domain::{
    Batch, BatchId, Community, CommunityId, Delivery, DeliveryCounts, DeliveryOutcome, Mailbox,
    Owner, OwnerId, SenderId, SkipReason, Timestamp, TokenRecord, TokenState,
};
use crate::error::{InvalidSetting, Side};
use crate::mime::{MessageFrame, MessageIds};
use crate::progress::{Progress, RunControl, StopReason};
use crate::repository::{ClaimHolder, InvitationStore, OwnerRepository, RepositoryError};
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
    /// remaining owner would be wrong. Those deliveries go back to pending. Fewer do
    /// as well when nothing gets through after them (the batch has no more to send):
    /// an outage fails nobody, for a batch of 1 as for 10,000. Each such run is
    /// counted on the delivery ([`Delivery::unreachable_runs`]); in its
    /// [`UNREACHABLE_RUNS`]th it fails with its last error instead. A connection
    /// failure followed by a message that gets through fails at once, as before: the
    /// server was reachable, the message is the problem.
    pub unreachable_after: usize,
    /// How long a claim on a delivery lasts unless its sender renews it (default
    /// 20 s). A run renews all the claims it holds every quarter of this, in one
    /// repository call, so it never loses them however slow it is; it starts no
    /// message on a claim it could not renew for three quarters of it. Once a dead
    /// run's claims have gone this long without renewal, another run may take them
    /// over: a crash strands deliveries for at most this long, and a `resume` started
    /// at once finishes within about one lease plus the sending time.
    /// [`OwnerAccess::resume_after_crash`](crate::OwnerAccess::resume_after_crash)
    /// takes over every claim at once instead.
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
            claim_lease: DEFAULT_CLAIM_LEASE,
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
    /// The shortest claim lease: a run renews every quarter of a lease, so a shorter
    /// one would be mostly renewals.
    pub const MIN_CLAIM_LEASE: Duration = Duration::from_millis(100);
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
    /// `unreachable_after` at least 1; `claim_lease` from
    /// [`MIN_CLAIM_LEASE`](Self::MIN_CLAIM_LEASE) to
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
        if !(Self::MIN_CLAIM_LEASE..=Self::MAX_CLAIM_LEASE).contains(&self.claim_lease) {
            return Err(InvalidSetting::new(
                "claim_lease",
                self.claim_lease,
                format!(
                    "from {:?} to {:?}",
                    Self::MIN_CLAIM_LEASE,
                    Self::MAX_CLAIM_LEASE
                ),
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

/// The default [`SendOptions::claim_lease`]: short, since a crash strands deliveries
/// this long, yet four renewals' worth, so a store slow for a few seconds (SQLite
/// waits up to 10 s for a lock) does not cost a live sender its claims.
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(20);

/// A run renews its leases once this fraction of a lease has passed since the last
/// renewal began...
const RENEW_AFTER: f64 = 0.25;

/// ...and starts no message on them once this fraction has passed without one: the
/// rest is the margin for a message already started and for the two clocks.
const FRESH_FOR: f64 = 0.75;

/// The longest a run waiting on another sender's leases goes without looking at them
/// again, as a fraction of its own lease: a live sender that settles the batch is
/// noticed this soon.
const LOOK_AGAIN_AFTER: f64 = 0.5;

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

/// A delivery left pending because the server could not be reached in this many runs
/// in a row fails with its last error (DESIGN.md rule 6). A server that is down fails
/// nobody: every run stops with the rest pending. But a message that makes the server
/// drop the connection every time looks the same as an outage from the sender's side,
/// and without a limit it would stop every run of its batch, for ever.
pub const UNREACHABLE_RUNS: u32 = 3;

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
    /// Deliveries that may no longer be sent (see [`SkipReason`]), with the reason:
    /// recorded as skipped, never sent.
    skipped: Vec<(OwnerId, SkipReason)>,
    /// When the claim was asked for: its lease runs from no earlier than this.
    asked_at: Instant,
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
    /// the run goes on and another message gets through.
    Unreachable(Unreachable),
    /// A fatal error: the delivery goes back to pending.
    Fatal { owner: OwnerId, error: String },
    /// Another sender took it over before this run started its message.
    Lost,
    /// The run stopped while this message waited for a renewal: it goes back.
    Unstarted { owner: OwnerId },
}

/// A delivery whose retries ran out on connection errors in this run.
struct Unreachable {
    owner: OwnerId,
    error: String,
    attempts: u32,
    /// Its [`Delivery::unreachable_runs`] before this run.
    runs_before: u32,
}

/// Outcomes waiting to be recorded in one repository call.
#[derive(Default)]
struct Outcomes {
    items: Vec<(OwnerId, DeliveryOutcome)>,
    /// The event of each item, reported once it is recorded.
    events: Vec<Option<Progress>>,
    since: Option<Instant>,
}

impl Outcomes {
    fn push(&mut self, owner: OwnerId, outcome: DeliveryOutcome) {
        let event = match &outcome {
            DeliveryOutcome::Sent { .. } => Some(Progress::Sent {
                owner: owner.clone(),
            }),
            DeliveryOutcome::Failed { error, .. } => Some(Progress::Failed {
                owner: owner.clone(),
                error: error.clone(),
            }),
            DeliveryOutcome::Unreachable { .. } => None,
            DeliveryOutcome::Skipped { reason } => Some(Progress::Skipped {
                owner: owner.clone(),
                reason: *reason,
            }),
        };
        self.since.get_or_insert_with(Instant::now);
        self.items.push((owner, outcome));
        self.events.push(event);
    }

    fn failed(&mut self, owner: OwnerId, error: String, attempts: u32) {
        self.push(owner, DeliveryOutcome::Failed { error, attempts });
    }

    fn skipped(&mut self, owner: OwnerId, reason: SkipReason) {
        self.push(owner, DeliveryOutcome::Skipped { reason });
    }

    /// Puts a group whose recording failed back in front, to be tried again.
    fn put_back(&mut self, group: Outcomes) {
        let Outcomes {
            mut items,
            mut events,
            since,
        } = group;
        items.append(&mut self.items);
        events.append(&mut self.events);
        self.items = items;
        self.events = events;
        self.since = since.or(self.since).or_else(|| Some(Instant::now()));
    }

    /// Takes the waiting group, leaving this one empty.
    fn take(&mut self) -> Outcomes {
        std::mem::take(self)
    }
}

/// A group of outcomes after its repository call.
struct Recorded {
    group: Outcomes,
    /// The owners the repository refused: another sender holds them now.
    result: Result<Vec<OwnerId>, RepositoryError>,
}

/// A renewal after its repository call.
struct Renewed {
    asked_at: Instant,
    /// The owners not renewed: another sender holds them now.
    result: Result<Vec<OwnerId>, RepositoryError>,
}

pub(crate) struct Engine<'a> {
    pub repo: &'a dyn InvitationStore,
    /// The host's owners, read once per claimed chunk (never once per message).
    pub directory: &'a dyn OwnerRepository,
    pub transport: &'a dyn MailTransport,
    pub clock: &'a dyn Clock,
    pub options: &'a SendOptions,
    pub control: &'a RunControl,
}

/// A port's failure during a run, with the port it came from.
struct PortFailure {
    side: Side,
    error: RepositoryError,
}

struct RunState {
    stop: Mutex<Option<StopReason>>,
    /// The first port failure: the run stops, and ends with
    /// [`StopReason::StoreUnavailable`] naming the side.
    error: Mutex<Option<PortFailure>>,
    /// What this run's outcomes became, for a report the store cannot give.
    tally: Mutex<Tally>,
    next_slot: Mutex<Option<Timestamp>>,
    leases: Leases,
    /// The last `Waiting` event, so a wait that did not change is told once.
    last_wait: Mutex<Option<Progress>>,
    /// Wakes every wait of the run when it stops for a reason of its own (a fatal
    /// error, an unreachable server, a store failure, a take-over).
    stopping: Notify,
}

impl RunState {
    fn new() -> Self {
        Self {
            stop: Mutex::new(None),
            error: Mutex::new(None),
            tally: Mutex::new(Tally::default()),
            next_slot: Mutex::new(None),
            leases: Leases::default(),
            last_wait: Mutex::new(None),
            stopping: Notify::new(),
        }
    }

    fn stop_with(&self, reason: StopReason) {
        let mut stop = self.stop.lock().expect("run state");
        if stop.is_none() {
            *stop = Some(reason);
        }
        drop(stop);
        self.stopping.notify_waiters();
    }

    fn fail(&self, failure: PortFailure) {
        let mut slot = self.error.lock().expect("run state");
        if slot.is_none() {
            *slot = Some(failure);
        }
        drop(slot);
        self.stopping.notify_waiters();
    }

    /// [`fail`](Self::fail) with an error of the invitation store.
    fn store_failed(&self, error: RepositoryError) {
        self.fail(PortFailure {
            side: Side::Store,
            error,
        });
    }

    /// Completes once the run is stopping, for whatever reason (at once if it is).
    async fn stopped(&self, control: &RunControl) {
        loop {
            let own = self.stopping.notified();
            tokio::pin!(own);
            own.as_mut().enable();
            if self.is_stopping(control) {
                return;
            }
            tokio::select! {
                _ = &mut own => {}
                _ = control.stop.stopped() => {}
            }
        }
    }

    fn has_failed(&self) -> bool {
        self.error.lock().expect("run state").is_some()
    }

    fn is_stopping(&self, control: &RunControl) -> bool {
        if control.stop.is_stopped() {
            self.stop_with(StopReason::Cancelled);
        }
        self.stop.lock().expect("run state").is_some() || self.has_failed()
    }
}

/// This run's hold on its claims, as its workers check it before each attempt.
#[derive(Default)]
struct Leases {
    /// Until when (by this process's monotonic clock) a message may be started on
    /// this run's claims: `FRESH_FOR` of a lease after the last renewal (or the first
    /// claim) was asked for. Monotonic time keeps running while the process is
    /// paused, so a sender woken after its lease ran out renews before it sends.
    fresh_until: Mutex<Option<Instant>>,
    /// Deliveries another sender took over: never started here again.
    lost: Mutex<HashSet<OwnerId>>,
    /// Wakes the workers waiting for a renewal.
    renewed: Notify,
}

impl Leases {
    fn is_fresh(&self) -> bool {
        self.fresh_until
            .lock()
            .expect("leases")
            .is_some_and(|until| Instant::now() < until)
    }

    fn fresh_until(&self, until: Instant) {
        *self.fresh_until.lock().expect("leases") = Some(until);
        self.renewed.notify_waiters();
    }

    fn is_lost(&self, owner: &OwnerId) -> bool {
        self.lost.lock().expect("leases").contains(owner)
    }

    /// Marks deliveries as taken over; returns those not known as such before.
    fn lose(&self, owners: Vec<OwnerId>) -> Vec<OwnerId> {
        let mut lost = self.lost.lock().expect("leases");
        let fresh: Vec<OwnerId> = owners
            .into_iter()
            .filter(|o| lost.insert(o.clone()))
            .collect();
        drop(lost);
        // Workers waiting for a renewal see the loss at once.
        self.renewed.notify_waiters();
        fresh
    }

    /// A delivery claimed again (its taker gave it back): this run's once more.
    fn regained(&self, owner: &OwnerId) {
        let mut lost = self.lost.lock().expect("leases");
        if !lost.is_empty() {
            lost.remove(owner);
        }
    }

    fn lost_count(&self) -> usize {
        self.lost.lock().expect("leases").len()
    }
}

/// What became of this run's outcomes: what its report says when the store cannot be
/// read at the end.
#[derive(Default)]
struct Tally {
    /// Sent outcomes the store recorded.
    recorded_sent: usize,
    /// Failed outcomes the store recorded, with their errors.
    recorded_failed: Vec<(OwnerId, String)>,
    /// Skipped outcomes the store recorded.
    recorded_skipped: usize,
    /// Sent outcomes the store did not take (its call failed): these messages went
    /// out, and `resume` sends them again with the same Message-ID.
    unrecorded_sent: usize,
}

/// What a run found when it had nothing more to claim.
enum Leftover {
    /// Nothing: every delivery is sent or failed.
    Settled(DeliveryCounts),
    /// Other senders hold deliveries; the run waited for their leases.
    Waited,
    /// Pending deliveries and no holder: claimable again (another sender gave them
    /// back meanwhile).
    Unclaimed,
}

/// What a run did.
pub(crate) struct RunOutcome {
    pub stopped: Option<StopReason>,
    /// The batch's counts when the run ended: nothing open unless it stopped. When the
    /// store could not give them, the counts the run started with plus what it
    /// recorded.
    pub counts: DeliveryCounts,
    /// Whether `counts` came from the store.
    pub counts_stored: bool,
    /// Messages this run sent whose outcome the store did not take: in `counts` they
    /// are still claimed.
    pub unrecorded_sent: usize,
    /// The failures this run recorded, for a report the store cannot give.
    pub recorded_failed: Vec<(OwnerId, String)>,
}

impl Engine<'_> {
    /// Sends the batch until it is settled or the run stops: claims what is
    /// claimable, renews what it holds, and when the rest is held by other senders,
    /// waits for their leases to run out (or for them to settle it). `before` is the
    /// batch's counts as the run starts.
    ///
    /// A repository error is a stop like any other ([`StopReason::StoreUnavailable`]):
    /// nothing new starts, the messages in flight finish, their outcomes are tried
    /// once more, and what the store did not take stays claimed until the lease runs
    /// out, for `resume`.
    pub async fn run(&self, prepared: &PreparedBatch, before: DeliveryCounts) -> RunOutcome {
        let batch_id = &prepared.batch.id;
        let sender = SenderId::generate();
        self.control.emit(Progress::Queued {
            batch: batch_id.clone(),
            pending: before.pending + before.claimed,
        });
        let state = RunState::new();
        let concurrency = self.options.concurrency.max(1);
        let chunk = CLAIM_CHUNK;
        let group = self.options.outcome_group.max(1);
        let lease = self.options.claim_lease;
        let renew_after = lease.mul_f64(RENEW_AFTER);
        let fresh_for = lease.mul_f64(FRESH_FOR);

        let mut queue: VecDeque<Ready> = VecDeque::new();
        let mut exhausted = false;
        // Every delivery this run holds a claim on, from its claim until its outcome
        // is recorded or it is given back: what a renewal renews.
        let mut holding: HashSet<OwnerId> = HashSet::new();
        // When the lease of everything in `holding` began, at the latest: the last
        // renewal's or, before one, the first claim's request.
        let mut lease_start: Option<Instant> = None;
        let mut unclaimed_looks = 0u32;
        let mut settled: Option<DeliveryCounts> = None;
        // The next chunk is claimed (and its tokens stored) while the current one is
        // being sent, so workers never wait on the repository. Boxed futures keep the
        // run `Send` for hosts that spawn it.
        let mut claiming: Option<BoxFuture<'_, Result<Chunk, PortFailure>>> = None;
        // Outcomes are recorded while the next messages go out: the engine never waits
        // on a commit unless a whole further group is waiting behind it.
        let mut recording: Option<BoxFuture<'_, Recorded>> = None;
        let mut recording_len = 0usize;
        // The deliveries of the group being recorded: a renewal meanwhile may find them
        // settled by this very group, so only the group's result says whether one was
        // taken over.
        let mut in_recording: HashSet<OwnerId> = HashSet::new();
        // A renewal renews all that is held when it starts. No claim runs beside it, so
        // that what a claim brings in always has a lease at least as fresh as the last
        // renewal's.
        let mut renewing: Option<BoxFuture<'_, Renewed>> = None;
        let mut in_flight: FuturesUnordered<BoxFuture<'_, Settled>> = FuturesUnordered::new();
        let mut outcomes = Outcomes::default();
        let mut unreachable: Vec<Unreachable> = Vec::new();
        let mut to_release: Vec<OwnerId> = Vec::new();
        loop {
            let stopping = state.is_stopping(self.control);
            // A stopping run renews only for the outcomes it still has to record: what
            // it gives back needs no lease.
            let unrecorded =
                !in_flight.is_empty() || recording.is_some() || !outcomes.items.is_empty();
            let renewal_due = renewing.is_none()
                && !holding.is_empty()
                && (!stopping || unrecorded)
                && lease_start.is_some_and(|t| t.elapsed() >= renew_after);
            if renewal_due && claiming.is_none() {
                let owners: Vec<OwnerId> = holding.iter().cloned().collect();
                renewing = Some(Box::pin(self.renew(batch_id, &sender, owners)));
            }
            let renewal_pending = renewal_due || renewing.is_some();
            // One chunk is kept in reserve, so the workers never wait on a claim.
            if !stopping
                && !exhausted
                && !renewal_pending
                && claiming.is_none()
                && queue.len() < chunk
            {
                claiming = Some(Box::pin(self.claim_chunk(prepared, &sender, chunk)));
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
                in_recording.extend(outcomes.items.iter().map(|(owner, _)| owner.clone()));
                recording = Some(Box::pin(self.record(batch_id, &sender, outcomes.take())));
            }
            let in_hand = !idle
                || recording.is_some()
                || renewing.is_some()
                || !outcomes.items.is_empty()
                || (!queue.is_empty() && !stopping);
            if !in_hand {
                if stopping {
                    break;
                }
                if let Some(last) = unreachable.last() {
                    // Nothing got through after them: the server looks unreachable,
                    // however few deliveries the batch has. They wait.
                    state.stop_with(StopReason::Unreachable {
                        error: last.error.clone(),
                    });
                    continue;
                }
                if exhausted {
                    match self.leftover(batch_id, &sender, &state).await {
                        Ok(Leftover::Settled(counts)) => {
                            settled = Some(counts);
                            break;
                        }
                        Ok(Leftover::Waited) => unclaimed_looks = 0,
                        Ok(Leftover::Unclaimed) => {
                            unclaimed_looks += 1;
                            if unclaimed_looks > 3 {
                                state.store_failed(RepositoryError::Corrupt {
                                    message: format!(
                                        "batch `{batch_id}` has pending deliveries that claim_deliveries never returns"
                                    ),
                                });
                                break;
                            }
                        }
                        Err(e) => {
                            state.store_failed(e);
                            break;
                        }
                    }
                    exhausted = false;
                    continue;
                }
            }
            // Wake up for what is due and not already waiting on something else.
            let deadlines = [
                outcomes
                    .since
                    .filter(|_| recording.is_none())
                    .map(|t| t + self.options.outcome_delay),
                lease_start
                    .filter(|_| {
                        let unrecorded = !in_flight.is_empty()
                            || recording.is_some()
                            || !outcomes.items.is_empty();
                        !renewal_pending && !holding.is_empty() && (!stopping || unrecorded)
                    })
                    .map(|t| t + renew_after),
            ];
            let deadline = deadlines.into_iter().flatten().min();
            tokio::select! {
                biased;
                Some(settled) = in_flight.next(), if !in_flight.is_empty() => match settled {
                    Settled::Sent { owner, expires_at, attempts } => {
                        Self::give_up_held(&mut unreachable, &mut outcomes);
                        outcomes.push(owner, DeliveryOutcome::Sent { expires_at, attempts });
                    }
                    Settled::Failed { owner, error, attempts } => {
                        Self::give_up_held(&mut unreachable, &mut outcomes);
                        outcomes.failed(owner, error, attempts);
                    }
                    Settled::Fatal { owner, error } => {
                        holding.remove(&owner);
                        to_release.push(owner);
                        state.stop_with(StopReason::Fatal { error });
                    }
                    Settled::Unreachable(held)
                        if held.runs_before.saturating_add(1) >= UNREACHABLE_RUNS =>
                    {
                        // Its last run: it fails, saying why. That is no sign that
                        // the server can be reached, so what is held stays held.
                        let error = format!(
                            "{} (the connection failed on this message in {UNREACHABLE_RUNS} runs in a row)",
                            held.error
                        );
                        outcomes.failed(held.owner, error, held.attempts);
                    }
                    Settled::Unreachable(held) => {
                        let error = held.error.clone();
                        unreachable.push(held);
                        if unreachable.len() >= self.options.unreachable_after.max(1) {
                            state.stop_with(StopReason::Unreachable { error });
                        }
                    }
                    Settled::Lost => {}
                    Settled::Unstarted { owner } => {
                        holding.remove(&owner);
                        to_release.push(owner);
                    }
                },
                renewed = async { renewing.as_mut().expect("guarded").await }, if renewing.is_some() => {
                    renewing = None;
                    match renewed.result {
                        Ok(refused) => {
                            lease_start = Some(renewed.asked_at);
                            state.leases.fresh_until(renewed.asked_at + fresh_for);
                            // Not taken over: settled by this run meanwhile (no longer
                            // held, or in the group being recorded, whose result says).
                            let taken: Vec<OwnerId> = refused
                                .into_iter()
                                .filter(|o| holding.contains(o) && !in_recording.contains(o))
                                .collect();
                            self.lose(taken, &mut holding, &mut queue, &state);
                        }
                        Err(e) => state.store_failed(e),
                    }
                },
                claimed = async { claiming.as_mut().expect("guarded").await }, if claiming.is_some() => {
                    claiming = None;
                    match claimed {
                        Ok(chunk) => {
                            if holding.is_empty() {
                                lease_start = Some(chunk.asked_at);
                                state.leases.fresh_until(chunk.asked_at + fresh_for);
                            }
                            // A delivery this run already holds (claimed again when its
                            // lease ran out before a renewal) is already on its way.
                            let mut fresh = 0usize;
                            for (owner, reason) in chunk.skipped {
                                state.leases.regained(&owner);
                                if holding.insert(owner.clone()) {
                                    fresh += 1;
                                    outcomes.skipped(owner, reason);
                                }
                            }
                            for ready in chunk.ready {
                                state.leases.regained(&ready.delivery.owner);
                                if holding.insert(ready.delivery.owner.clone()) {
                                    fresh += 1;
                                    queue.push_back(ready);
                                }
                            }
                            if fresh > 0 {
                                unclaimed_looks = 0;
                            }
                            if fresh == 0 {
                                // Nothing new came back: what is left is settled, or
                                // held by other senders.
                                exhausted = true;
                            }
                        }
                        Err(failure) => state.fail(failure),
                    }
                },
                recorded = async { recording.as_mut().expect("guarded").await }, if recording.is_some() => {
                    recording = None;
                    recording_len = 0;
                    in_recording.clear();
                    match recorded.result {
                        Err(e) if !state.has_failed() => {
                            // The store's first failure: the run stops, and this
                            // group is tried once more with the last outcomes (the
                            // store may be back by then: a lock held a little past
                            // the busy time-out).
                            state.store_failed(e);
                            outcomes.put_back(recorded.group);
                        }
                        result => {
                            let recorded = Recorded {
                                group: recorded.group,
                                result,
                            };
                            for (owner, _) in &recorded.group.items {
                                holding.remove(owner);
                            }
                            self.report(recorded, &mut holding, &mut queue, &state);
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
            }
        }

        let mut stopped = state.stop.lock().expect("run state").clone();
        if stopped.is_some() {
            // The server looked unreachable: those owners are not failed, they wait,
            // and the run is counted on each (the last of `UNREACHABLE_RUNS` fails
            // them as they come in, above).
            for held in unreachable.drain(..) {
                outcomes.push(
                    held.owner,
                    DeliveryOutcome::Unreachable {
                        attempts: held.attempts,
                    },
                );
            }
        } else {
            Self::give_up_held(&mut unreachable, &mut outcomes);
        }
        self.flush(
            batch_id,
            &sender,
            &mut outcomes,
            &mut holding,
            &mut queue,
            &state,
        )
        .await;
        // Claimed but never started (the run stopped), or stopped by a fatal error:
        // give them back. Those another sender took meanwhile are refused, and stay
        // that sender's.
        to_release.extend(queue.drain(..).map(|r| r.delivery.owner));
        if !to_release.is_empty() {
            match self
                .repo
                .release_deliveries(batch_id, &sender, &to_release)
                .await
            {
                // Refused: another sender holds them now.
                Ok(refused) => {
                    for owner in state.leases.lose(refused) {
                        self.control.emit(Progress::TakenOver { owner });
                    }
                }
                Err(e) => state.store_failed(e),
            }
        }
        if let Some(StopReason::TakenOver { deliveries }) = &mut stopped {
            *deliveries = state.leases.lost_count();
        }
        let counts = match settled {
            Some(counts) => Some(counts),
            None => match self.repo.delivery_counts(batch_id).await {
                Ok(counts) => Some(counts),
                Err(e) => {
                    state.store_failed(e);
                    None
                }
            },
        };
        // A store error outranks the stop it may have met: it is what the operator
        // has to fix, and it is why outcomes may be missing.
        if let Some(failure) = state.error.lock().expect("run state").take() {
            stopped = Some(StopReason::port_failed(failure.side, &failure.error));
        }
        if let Some(reason) = &stopped {
            self.control.emit(Progress::Stopped {
                reason: reason.clone(),
            });
        }
        let tally = std::mem::take(&mut *state.tally.lock().expect("run state"));
        let counts_stored = counts.is_some();
        let counts = counts.unwrap_or_else(|| {
            let sent = before.sent + tally.recorded_sent;
            let failed = before.failed + tally.recorded_failed.len();
            let skipped = before.skipped + tally.recorded_skipped;
            DeliveryCounts {
                pending: before.total().saturating_sub(sent + failed + skipped),
                claimed: 0,
                sent,
                failed,
                skipped,
            }
        });
        self.control.emit(Progress::Finished {
            sent: counts.sent + tally.unrecorded_sent,
            failed: counts.failed,
            pending: (counts.pending + counts.claimed).saturating_sub(tally.unrecorded_sent),
        });
        RunOutcome {
            stopped,
            counts,
            counts_stored,
            unrecorded_sent: tally.unrecorded_sent,
            recorded_failed: tally.recorded_failed,
        }
    }

    /// Held connection failures become failures: the run went on, so the server was
    /// reachable after all and these owners had their retries.
    fn give_up_held(held: &mut Vec<Unreachable>, outcomes: &mut Outcomes) {
        for h in held.drain(..) {
            outcomes.failed(h.owner, h.error, h.attempts);
        }
    }

    /// Deliveries another sender took over: never sent here again, no longer held,
    /// and the run stops (its claims are not safe with it: it was paused or cut off
    /// from the store for longer than its lease).
    fn lose(
        &self,
        owners: Vec<OwnerId>,
        holding: &mut HashSet<OwnerId>,
        queue: &mut VecDeque<Ready>,
        state: &RunState,
    ) {
        if owners.is_empty() {
            return;
        }
        for owner in &owners {
            holding.remove(owner);
        }
        for owner in state.leases.lose(owners) {
            self.control.emit(Progress::TakenOver { owner });
        }
        queue.retain(|r| !state.leases.is_lost(&r.delivery.owner));
        state.stop_with(StopReason::TakenOver { deliveries: 0 });
    }

    /// Renews every lease this run holds, in one repository call.
    async fn renew(&self, batch: &BatchId, sender: &SenderId, owners: Vec<OwnerId>) -> Renewed {
        let asked_at = Instant::now();
        let result = self
            .repo
            .renew_claims(
                batch,
                sender,
                &owners,
                self.options.claim_lease,
                self.clock.now(),
            )
            .await;
        Renewed { asked_at, result }
    }

    /// Records a group of outcomes in one repository call; their events are reported
    /// once it is committed.
    async fn record(&self, batch: &BatchId, sender: &SenderId, group: Outcomes) -> Recorded {
        let result = self
            .repo
            .record_deliveries(batch, sender, &group.items, self.clock.now())
            .await;
        Recorded { group, result }
    }

    /// Records the waiting outcomes now, then reports them.
    async fn flush(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &mut Outcomes,
        holding: &mut HashSet<OwnerId>,
        queue: &mut VecDeque<Ready>,
        state: &RunState,
    ) {
        if outcomes.items.is_empty() {
            return;
        }
        let recorded = self.record(batch, sender, outcomes.take()).await;
        for (owner, _) in &recorded.group.items {
            holding.remove(owner);
        }
        self.report(recorded, holding, queue, state);
    }

    /// Reports a recorded group's events, except those of the deliveries another
    /// sender took over (their outcome did not count); or stops the run on the
    /// repository's error.
    fn report(
        &self,
        recorded: Recorded,
        holding: &mut HashSet<OwnerId>,
        queue: &mut VecDeque<Ready>,
        state: &RunState,
    ) {
        let mut tally = state.tally.lock().expect("run state");
        match recorded.result {
            Ok(refused) => {
                let refused_set: HashSet<&OwnerId> = refused.iter().collect();
                for ((owner, outcome), event) in
                    recorded.group.items.iter().zip(recorded.group.events)
                {
                    if refused_set.contains(owner) {
                        continue;
                    }
                    match outcome {
                        DeliveryOutcome::Sent { .. } => tally.recorded_sent += 1,
                        DeliveryOutcome::Failed { error, .. } => {
                            tally.recorded_failed.push((owner.clone(), error.clone()));
                        }
                        DeliveryOutcome::Skipped { .. } => tally.recorded_skipped += 1,
                        DeliveryOutcome::Unreachable { .. } => {}
                    }
                    if let Some(event) = event {
                        self.control.emit(event);
                    }
                }
                drop(tally);
                self.lose(refused, holding, queue, state);
            }
            Err(e) => {
                // Not recorded: these deliveries stay claimed by this run until the
                // lease runs out; the sent ones went out and go again, with the same
                // Message-ID, when `resume` takes them.
                tally.unrecorded_sent += recorded
                    .group
                    .items
                    .iter()
                    .filter(|(_, o)| matches!(o, DeliveryOutcome::Sent { .. }))
                    .count();
                drop(tally);
                state.store_failed(e);
            }
        }
    }

    /// Looks at what is left of the batch once this run has nothing more to claim.
    /// When other senders hold some of it, tells the observer and waits until the
    /// first of their leases runs out (at most `LOOK_AGAIN_AFTER` of a lease, so a
    /// live sender's end is noticed soon).
    async fn leftover(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        state: &RunState,
    ) -> Result<Leftover, RepositoryError> {
        let held = self.repo.held_claims(batch, self.clock.now()).await?;
        let others: Vec<&ClaimHolder> = held
            .holders
            .iter()
            .filter(|h| h.sender != *sender)
            .collect();
        let (Some(first), Some(until)) = (
            others.iter().map(|h| h.first_until).min(),
            others.iter().map(|h| h.last_until).max(),
        ) else {
            let counts = self.repo.delivery_counts(batch).await?;
            return Ok(if counts.pending + counts.claimed == 0 {
                Leftover::Settled(counts)
            } else {
                Leftover::Unclaimed
            });
        };
        let waiting = Progress::Waiting {
            held: others.iter().map(|h| h.deliveries).sum(),
            senders: others.len(),
            until,
        };
        let changed = {
            let mut last = state.last_wait.lock().expect("run state");
            let changed = last.as_ref() != Some(&waiting);
            *last = Some(waiting.clone());
            changed
        };
        if changed {
            self.control.emit(waiting);
        }
        // A moment past the first lease's end, so that it has run out when we claim.
        let wait = (first - held.now + Duration::from_millis(5))
            .min(self.options.claim_lease.mul_f64(LOOK_AGAIN_AFTER));
        self.wait(wait, state).await;
        Ok(Leftover::Waited)
    }

    /// Sleeps on the run's clock until `total` has passed or the run stops, whichever
    /// comes first: a stop request ends every wait at once. `false` when it stopped.
    async fn wait(&self, total: Duration, state: &RunState) -> bool {
        if state.is_stopping(self.control) {
            return false;
        }
        tokio::select! {
            biased;
            _ = state.stopped(self.control) => false,
            _ = self.clock.sleep(total) => true,
        }
    }

    /// Claims up to `limit` deliveries, loads their owners, and stores a fresh pending token
    /// for each one that may still be sent, all in a few repository calls. A failure
    /// names its port: the claim and the tokens are the store's, the owners the
    /// directory's.
    async fn claim_chunk(
        &self,
        prepared: &PreparedBatch,
        sender: &SenderId,
        limit: usize,
    ) -> Result<Chunk, PortFailure> {
        let store = |error| PortFailure {
            side: Side::Store,
            error,
        };
        let directory = |error| PortFailure {
            side: Side::Directory,
            error,
        };
        let asked_at = Instant::now();
        let claimed = self
            .repo
            .claim_deliveries(
                &prepared.batch.id,
                sender,
                limit,
                self.options.claim_lease,
                self.clock.now(),
            )
            .await
            .map_err(store)?;
        let mut chunk = Chunk {
            ready: Vec::with_capacity(claimed.len()),
            skipped: Vec::new(),
            asked_at,
        };
        if claimed.is_empty() {
            return Ok(chunk);
        }
        // The owners as they are now, and the addresses other owners hold too: two
        // reads per chunk, never one per message.
        let ids: Vec<OwnerId> = claimed.iter().map(|d| d.owner.clone()).collect();
        let mut owners: HashMap<OwnerId, Owner> = self
            .directory
            .owners(&ids)
            .await
            .map_err(directory)?
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect();
        let keys: Vec<String> = claimed
            .iter()
            .map(|d| d.to.normalized().to_owned())
            .collect();
        let shared: HashSet<String> = self
            .directory
            .shared_email_holders(&keys)
            .await
            .map_err(directory)?
            .into_iter()
            .map(|h| h.key)
            .collect();
        let issued_at = self.clock.now();
        let expires_at = issued_at + prepared.token_ttl();
        let mut records = Vec::with_capacity(claimed.len());
        for delivery in claimed {
            let owner = owners.remove(&delivery.owner);
            let community = &prepared.batch.community;
            if let Some(reason) = Self::skip_reason(&delivery, owner.as_ref(), community, &shared) {
                chunk.skipped.push((delivery.owner, reason));
                continue;
            }
            let owner = owner.expect("checked by skip_reason");
            // Pending until its message is recorded as sent: the owner's older link
            // keeps working until then (a run may stop or crash before sending).
            let token = RegistrationToken::generate();
            records.push(TokenRecord {
                hash: token.hash(),
                owner: owner.id.clone(),
                batch: prepared.batch.id.clone(),
                issued_at,
                expires_at,
                sent_to: delivery.to.as_str().to_owned(),
                state: TokenState::Pending,
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
            self.repo.issue_tokens(&records).await.map_err(store)?;
        }
        Ok(chunk)
    }

    /// Why an owner may no longer be sent to, checked just before sending (a batch may
    /// be resumed long after it was made): the first of [`SkipReason`]'s reasons that
    /// applies. `shared` holds the delivered keys that more than one owner holds now.
    fn skip_reason(
        delivery: &Delivery,
        owner: Option<&Owner>,
        community: &CommunityId,
        shared: &HashSet<String>,
    ) -> Option<SkipReason> {
        let Some(owner) = owner else {
            return Some(SkipReason::UnknownOwner);
        };
        if &owner.community != community {
            return Some(SkipReason::Moved);
        }
        if owner.is_registered() {
            return Some(SkipReason::Registered);
        }
        if owner.email_key().as_deref() != Some(delivery.to.normalized()) {
            return Some(SkipReason::EmailChanged);
        }
        if shared.contains(delivery.to.normalized()) {
            return Some(SkipReason::SharedEmail);
        }
        None
    }

    /// Waits until a message may be started on `owner`'s claim: not taken over, and
    /// the run's leases renewed recently enough that no other sender can have taken
    /// it. `false` when it was taken over, or the run stops while it waits.
    async fn may_send(&self, state: &RunState, owner: &OwnerId) -> bool {
        loop {
            let renewed = state.leases.renewed.notified();
            if state.leases.is_lost(owner) {
                return false;
            }
            if state.leases.is_fresh() {
                return true;
            }
            if state.is_stopping(self.control) {
                return false;
            }
            tokio::select! {
                _ = renewed => {}
                _ = state.stopped(self.control) => {}
            }
        }
    }

    /// Renders, builds and sends one message, retrying transient errors. Touches no
    /// repository: the outcome is recorded by the run, grouped with others. Before
    /// each attempt it checks that the run still holds the claim.
    async fn deliver(&self, prepared: &PreparedBatch, state: &RunState, ready: Ready) -> Settled {
        let Ready {
            delivery,
            owner,
            token,
            issued_at,
            expires_at,
        } = ready;
        let batch_id = &prepared.batch.id;
        let fields = MergeFields::for_owner(
            &owner,
            &prepared.community,
            registration_link(&prepared.batch.portal_url, &token),
            expires_at,
            &prepared.batch.portal_url,
            &prepared.reply_to,
        );
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
        let to = Mailbox::named_or_bare(&fields.full_name, &delivery.to);
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
            // A stop ends the wait for a slot, and nothing starts after it.
            if !self.pace(state).await || state.is_stopping(self.control) {
                return Settled::Unstarted { owner: owner.id };
            }
            if !self.may_send(state, &owner.id).await {
                return if state.leases.is_lost(&owner.id) {
                    Settled::Lost
                } else {
                    Settled::Unstarted { owner: owner.id }
                };
            }
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
                    if !self.wait(delay, state).await {
                        // Stopped during the backoff: back to pending, unsent.
                        return Settled::Unstarted { owner: owner.id };
                    }
                }
                Err(e) if e.is_transient() && e.is_connection() => {
                    return Settled::Unreachable(Unreachable {
                        owner: owner.id,
                        error: e.summary(),
                        attempts: attempt,
                        runs_before: delivery.unreachable_runs,
                    });
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

    /// Waits for the next slot under the rate limit, if there is one; `false` when
    /// the run stopped meanwhile.
    async fn pace(&self, state: &RunState) -> bool {
        let Some(rate) = self.options.rate_per_second.filter(|r| *r > 0.0) else {
            return true;
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
        wait.is_zero() || self.wait(wait, state).await
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
