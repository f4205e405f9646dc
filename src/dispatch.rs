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
    Batch, Delivery, DeliveryOutcome, Mailbox, Owner, OwnerId, Timestamp, TokenRecord, TokenState,
};
use crate::mime::{MessageFrame, message_id};
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
    /// At most this many messages started per second (default: unlimited).
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
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            rate_per_second: None,
            retry: RetryPolicy::default(),
            unreachable_after: 3,
            claim_lease: Duration::from_secs(600),
        }
    }
}

type ClaimResult = Result<Vec<(Delivery, Option<Owner>)>, RepositoryError>;

/// Everything one run shares across deliveries, prepared once.
pub(crate) struct PreparedBatch {
    pub batch: Batch,
    pub template: CompiledTemplate,
    pub frame: MessageFrame,
    pub community_name: String,
    pub message_id_domain: String,
}

impl PreparedBatch {
    fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.batch.token_ttl_seconds)
    }
}

/// The outcome of one delivery within a run.
enum Settled {
    Sent,
    Failed,
    /// Retries exhausted on connection errors: held back, recorded as failed only if
    /// the run goes on.
    Unreachable(Delivery, String, u32),
    /// A fatal error: the delivery was released to pending.
    Fatal(String),
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
        let chunk = (concurrency * 4).clamp(16, 512);

        // A run never takes over its own claims, even when the clock stands still or
        // steps back: it remembers what it took.
        let stale_before = stale_before.min(self.clock.now() - Duration::from_micros(1));
        let mut queue: VecDeque<(Delivery, Option<Owner>)> = VecDeque::new();
        let mut taken: HashSet<OwnerId> = HashSet::new();
        let mut exhausted = false;
        // The next chunk is claimed while the current one is being sent, so workers
        // never wait on the repository. Boxed futures keep the run `Send` for hosts
        // that spawn it.
        let mut claiming: Option<BoxFuture<'_, ClaimResult>> = None;
        let mut in_flight: FuturesUnordered<BoxFuture<'_, Result<Settled, RepositoryError>>> =
            FuturesUnordered::new();
        let mut held: Vec<(Delivery, String, u32)> = Vec::new();
        loop {
            let stopping = state.is_stopping(self.control);
            if !stopping && !exhausted && claiming.is_none() && queue.len() < concurrency {
                claiming = Some(Box::pin(self.claim_chunk(prepared, chunk, stale_before)));
            }
            while !stopping && in_flight.len() < concurrency {
                let Some((delivery, owner)) = queue.pop_front() else {
                    break;
                };
                in_flight.push(Box::pin(self.deliver(prepared, &state, delivery, owner)));
            }
            if in_flight.is_empty() && claiming.is_none() {
                break;
            }
            tokio::select! {
                biased;
                Some(result) = in_flight.next(), if !in_flight.is_empty() => match result {
                    Err(e) => state.fail(e),
                    Ok(Settled::Sent) | Ok(Settled::Failed) => {
                        self.flush_held(prepared, &state, &mut held).await;
                    }
                    Ok(Settled::Fatal(error)) => state.stop_with(StopReason::Fatal { error }),
                    Ok(Settled::Unreachable(delivery, error, attempts)) => {
                        held.push((delivery, error.clone(), attempts));
                        if held.len() >= self.options.unreachable_after.max(1) {
                            state.stop_with(StopReason::Unreachable { error });
                        }
                    }
                },
                claimed = async { claiming.as_mut().expect("guarded").await }, if claiming.is_some() => {
                    claiming = None;
                    match claimed {
                        Ok(items) => {
                            let before = queue.len();
                            queue.extend(items.into_iter().filter(|(d, _)| taken.insert(d.owner.clone())));
                            if queue.len() == before {
                                // Nothing new came back (none left, or only our own
                                // claims): the batch is exhausted for this run.
                                exhausted = true;
                            }
                        }
                        Err(e) => state.fail(e),
                    }
                },
            }
        }
        // Claimed but never started (the run stopped): give them back.
        let unstarted: Vec<OwnerId> = queue.drain(..).map(|(d, _)| d.owner).collect();
        if !unstarted.is_empty()
            && let Err(e) = self.repo.release_deliveries(batch_id, &unstarted).await
        {
            state.fail(e);
        }

        let stopped = state.stop.lock().expect("run state").clone();
        if stopped.is_some() {
            let owners: Vec<OwnerId> = held.drain(..).map(|(d, _, _)| d.owner).collect();
            if !owners.is_empty() {
                self.repo.release_deliveries(batch_id, &owners).await?;
            }
        } else {
            self.flush_held(prepared, &state, &mut held).await;
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

    /// Records held connection failures as failed: the run went on, so the server was
    /// reachable after all and these owners had their retries.
    async fn flush_held(
        &self,
        prepared: &PreparedBatch,
        state: &RunState,
        held: &mut Vec<(Delivery, String, u32)>,
    ) {
        for (delivery, error, attempts) in held.drain(..) {
            let outcome = DeliveryOutcome::Failed {
                error: error.clone(),
                attempts,
            };
            let now = self.clock.now();
            match self
                .repo
                .record_delivery(&prepared.batch.id, &delivery.owner, &outcome, now)
                .await
            {
                Ok(()) => self.control.emit(Progress::Failed {
                    owner: delivery.owner,
                    error,
                }),
                Err(e) => state.fail(e),
            }
        }
    }

    async fn claim_chunk(
        &self,
        prepared: &PreparedBatch,
        limit: usize,
        stale_before: Timestamp,
    ) -> Result<Vec<(Delivery, Option<Owner>)>, RepositoryError> {
        let now = self.clock.now();
        let claimed = self
            .repo
            .claim_deliveries(&prepared.batch.id, limit, now, stale_before)
            .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<OwnerId> = claimed.iter().map(|d| d.owner.clone()).collect();
        let mut owners: HashMap<OwnerId, Owner> = self
            .repo
            .owners(&ids)
            .await?
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect();
        Ok(claimed
            .into_iter()
            .map(|d| {
                let owner = owners.remove(&d.owner);
                (d, owner)
            })
            .collect())
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

    async fn deliver(
        &self,
        prepared: &PreparedBatch,
        state: &RunState,
        delivery: Delivery,
        owner: Option<Owner>,
    ) -> Result<Settled, RepositoryError> {
        let batch_id = &prepared.batch.id;
        if let Some(reason) = Self::skip_reason(&delivery, owner.as_ref()) {
            return self
                .settle_failed(prepared, &delivery, reason.to_owned(), 0)
                .await;
        }
        let owner = owner.expect("checked by skip_reason");

        let issued_at = self.clock.now();
        let expires_at = issued_at + prepared.token_ttl();
        let token = RegistrationToken::generate();
        self.repo
            .issue_token(&TokenRecord {
                hash: token.hash(),
                owner: owner.id.clone(),
                batch: batch_id.clone(),
                issued_at,
                expires_at,
                state: TokenState::Live,
            })
            .await?;

        let fields = MergeFields {
            first_name: owner.first_name.clone(),
            last_name: owner.last_name.clone(),
            full_name: owner.full_name(),
            property_address: owner.property_address.clone(),
            community_name: prepared.community_name.clone(),
            registration_url: registration_link(&prepared.batch.portal_url, &token),
            expires_on: expires_at.date_string(),
            portal_url: prepared.batch.portal_url.clone(),
        };
        let parts = match prepared.template.render(&fields) {
            Ok(parts) => parts,
            Err(problem) => {
                return self
                    .settle_failed(prepared, &delivery, problem.to_string(), 0)
                    .await;
            }
        };
        let to = Mailbox::new(Some(&fields.full_name), delivery.to.clone()).unwrap_or_else(|_| {
            Mailbox {
                name: None,
                address: delivery.to.clone(),
            }
        });
        let id = message_id(batch_id, &owner.id, &prepared.message_id_domain);
        // Sized for the encoded attachments up front: growing a 300 KB message by
        // doubling costs several copies and fresh pages per message.
        let attachments: usize = prepared
            .frame
            .encoded_attachments()
            .iter()
            .map(|a| a.as_bytes().len())
            .sum();
        let mut bytes = Vec::with_capacity(8192 + attachments);
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
                    let outcome = DeliveryOutcome::Sent {
                        expires_at,
                        attempts: attempt,
                    };
                    self.repo
                        .record_delivery(batch_id, &owner.id, &outcome, self.clock.now())
                        .await?;
                    self.control.emit(Progress::Sent { owner: owner.id });
                    return Ok(Settled::Sent);
                }
                Err(e) if e.is_fatal() => {
                    self.repo
                        .release_deliveries(batch_id, std::slice::from_ref(&owner.id))
                        .await?;
                    return Ok(Settled::Fatal(e.summary()));
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
                    return Ok(Settled::Unreachable(delivery, e.summary(), attempt));
                }
                Err(e) => {
                    return self
                        .settle_failed(prepared, &delivery, failure_text(&e), attempt)
                        .await;
                }
            }
        }
    }

    async fn settle_failed(
        &self,
        prepared: &PreparedBatch,
        delivery: &Delivery,
        error: String,
        attempts: u32,
    ) -> Result<Settled, RepositoryError> {
        let outcome = DeliveryOutcome::Failed {
            error: error.clone(),
            attempts,
        };
        self.repo
            .record_delivery(
                &prepared.batch.id,
                &delivery.owner,
                &outcome,
                self.clock.now(),
            )
            .await?;
        self.control.emit(Progress::Failed {
            owner: delivery.owner.clone(),
            error: error.clone(),
        });
        Ok(Settled::Failed)
    }

    /// Waits for the next slot under the rate limit, if there is one.
    async fn pace(&self, state: &RunState) {
        let Some(rate) = self.options.rate_per_second.filter(|r| *r > 0.0) else {
            return;
        };
        let interval = Duration::from_secs_f64(1.0 / rate);
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
