//! One delivery: the owner's message built from the prepared batch, then sent,
//! attempt after attempt while the error is transient, each attempt waiting for its
//! rate slot and for a claim renewed recently enough.

use std::time::Duration;

use crate::domain::{Mailbox, OwnerId, Timestamp};
use crate::progress::Progress;
use crate::template::MergeFields;
use crate::token::registration_link;
use crate::transport::{DeliveryTag, Envelope, TransportError};

use super::claims::Ready;
use super::stop::RunState;
use super::{Engine, PreparedBatch};

/// How one delivery ended in this run; recorded later, with others.
pub(super) enum Settled {
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
pub(super) struct Unreachable {
    pub(super) owner: OwnerId,
    pub(super) error: String,
    pub(super) attempts: u32,
    /// Its [`Delivery::unreachable_runs`](crate::domain::Delivery::unreachable_runs) before this run.
    pub(super) runs_before: u32,
}

/// One owner's message, built, with what its outcome needs.
struct Message {
    owner: OwnerId,
    envelope: Envelope,
    bytes: Vec<u8>,
    expires_at: Timestamp,
    /// Its delivery's [`Delivery::unreachable_runs`](crate::domain::Delivery::unreachable_runs)
    /// before this run.
    unreachable_runs: u32,
}

impl Engine<'_> {
    /// Renders, builds and sends one message, retrying transient errors. Touches no
    /// repository: the outcome is recorded by the run, grouped with others. Before
    /// each attempt it checks that the run still holds the claim.
    pub(super) async fn deliver(
        &self,
        prepared: &PreparedBatch,
        state: &RunState,
        ready: Ready,
    ) -> Settled {
        match Self::build_message(prepared, ready) {
            Ok(message) => self.send_with_retries(state, message).await,
            Err(unsendable) => unsendable,
        }
    }

    /// The owner's message: the merge fields with their personal link, the template
    /// rendered, the MIME message written with the owner's Message-ID. A template that
    /// does not render for this owner fails the delivery, with no attempt.
    fn build_message(prepared: &PreparedBatch, ready: Ready) -> Result<Message, Settled> {
        let Ready {
            delivery,
            owner,
            token,
            issued_at,
            expires_at,
        } = ready;
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
                return Err(Settled::Failed {
                    owner: owner.id,
                    error: problem.to_string(),
                    attempts: 0,
                });
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
                batch: prepared.batch.id.clone(),
                owner: Some(owner.id.clone()),
                message_id: id,
            });
        Ok(Message {
            owner: owner.id,
            envelope,
            bytes,
            expires_at,
            unreachable_runs: delivery.unreachable_runs,
        })
    }

    /// Sends the message until it is accepted, or an error or a stop ends its
    /// attempts: how the delivery ended.
    async fn send_with_retries(&self, state: &RunState, message: Message) -> Settled {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let Some(unstarted) = self.hold_back(state, &message.owner).await {
                return unstarted;
            }
            let error = match self.transport.send(&message.envelope, &message.bytes).await {
                Ok(_) => {
                    return Settled::Sent {
                        owner: message.owner,
                        expires_at: message.expires_at,
                        attempts: attempt,
                    };
                }
                Err(error) => error,
            };
            if let Some(settled) = self.after_failure(state, &message, attempt, error).await {
                return settled;
            }
        }
    }

    /// Why the next attempt must not start, if it must not: the run stops (also while
    /// it waits for its rate slot), or the claim was taken over, or it is not renewed
    /// before the run stops. `None`: go ahead.
    async fn hold_back(&self, state: &RunState, owner: &OwnerId) -> Option<Settled> {
        // A stop ends the wait for a slot, and nothing starts after it.
        if !self.pace(state).await || state.is_stopping(self.control) {
            return Some(Settled::Unstarted {
                owner: owner.clone(),
            });
        }
        if !self.may_send(state, owner).await {
            return Some(if state.leases.is_lost(owner) {
                Settled::Lost
            } else {
                Settled::Unstarted {
                    owner: owner.clone(),
                }
            });
        }
        None
    }

    /// After a failed attempt: a fatal error stops the run; a transient one is tried
    /// again after its backoff while attempts remain (`None`), then ends as
    /// unreachable when it is a connection error, as failed otherwise; any other
    /// error fails the delivery.
    async fn after_failure(
        &self,
        state: &RunState,
        message: &Message,
        attempt: u32,
        error: TransportError,
    ) -> Option<Settled> {
        let owner = || message.owner.clone();
        let retry = &self.options.retry;
        if error.is_fatal() {
            return Some(Settled::Fatal {
                owner: owner(),
                error: error.summary(),
            });
        }
        if error.is_transient() && attempt < retry.max_attempts.max(1) {
            let delay = jitter(retry.backoff(attempt));
            tracing::info!(
                owner = %message.owner,
                attempt,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                class = ?error.class(),
                error = %error.summary(),
                "retrying a delivery"
            );
            self.control.emit(Progress::Retrying {
                owner: owner(),
                attempt,
                delay,
                error: error.summary(),
            });
            // Stopped during the backoff: back to pending, unsent.
            let waited = self.wait(delay, state).await;
            return (!waited).then(|| Settled::Unstarted { owner: owner() });
        }
        if error.is_transient() && error.is_connection() {
            return Some(Settled::Unreachable(Unreachable {
                owner: owner(),
                error: error.summary(),
                attempts: attempt,
                runs_before: message.unreachable_runs,
            }));
        }
        Some(Settled::Failed {
            owner: owner(),
            error: failure_text(&error),
            attempts: attempt,
        })
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
    fn jitter_stays_between_half_and_all() {
        for _ in 0..200 {
            let d = jitter(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000));
        }
    }
}
