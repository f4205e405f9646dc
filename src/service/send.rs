//! Send, and after a stop or a crash resume and retry: the batch stored, the engine
//! run on it, the report and the Summary recap.

use crate::dispatch::{Engine, PreparedBatch};
use crate::domain::{
    ActivityEntry, ActivityKind, Batch, BatchId, Delivery, DeliveryCounts, DeliveryState,
    EmailAddress, NewBatch,
};
use crate::error::{Error, Result, Side};
use crate::mime::{MessageFrame, MessageIds};
use crate::progress::{RunControl, StopReason};
use crate::review::{Excluded, Review};
use crate::template::{CompiledTemplate, html_to_text_template};
use crate::transport::Envelope;

use super::OwnerAccess;
use super::reports::{FailedDelivery, SendReport, SkippedDelivery, SummaryOutcome, report_from};

impl OwnerAccess {
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
    ///
    /// # Errors
    /// As [`send_with`](Self::send_with): `InvalidInvite` with nothing stored or sent;
    /// a `Repository` error before the engine ran, with nothing sent (and the batch
    /// stored or not, as `send_with` says).
    ///
    /// [`MailTransport::close`]: crate::transport::MailTransport::close
    pub async fn send(&self, review: Review) -> Result<SendReport> {
        self.send_with(review, RunControl::new()).await
    }

    /// [`send`](Self::send) with progress events and a stop signal.
    ///
    /// # Errors
    /// An `Err` means nothing was sent. Once the send engine has started, a port
    /// failure is a stop ([`StopReason::StoreUnavailable`], naming the side) in the
    /// report, and delivery failures are in the report too.
    /// - [`Error::InvalidInvite`]: the review has problems; nothing is stored or sent.
    /// - [`Error::Repository`] with `Side::Store` from storing the batch: nothing is
    ///   stored (the batch, its activity entry and its deliveries are one step).
    ///
    /// Once the batch is stored, before the engine starts:
    /// - [`Error::NotFound`]: the community is gone from the directory.
    /// - [`Error::Repository`] with `Side::Directory`: reading the community failed.
    /// - [`Error::Repository`] with either side: completing a registration owed (see
    ///   [`redeem`](Self::redeem)) failed.
    ///
    /// In those three cases the batch stays stored with every delivery pending; it
    /// shows in the activity feed (`BatchCreated`, with its id) and
    /// [`resume`](Self::resume) sends it.
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
    pub(super) async fn store_batch(
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
        tracing::info!(
            batch = %new.batch.id,
            community = %new.batch.community,
            recipients = recipients_len,
            excluded = excluded.len(),
            resend,
            "batch created"
        );
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
    ///
    /// # Errors
    /// As [`resume_with`](Self::resume_with): `NotFound` or a `Repository` error from
    /// either side, before anything is sent; nothing changed.
    ///
    /// [`SendOptions::claim_lease`]: crate::SendOptions::claim_lease
    /// [`SkipReason`]: crate::domain::SkipReason
    pub async fn resume(&self, batch: &BatchId) -> Result<SendReport> {
        self.resume_with(batch, RunControl::new()).await
    }

    /// [`resume`](Self::resume) with progress events and a stop signal.
    ///
    /// # Errors
    /// An `Err` means nothing was sent and the batch is as it was; once the engine has
    /// started, a port failure is a stop in the report.
    /// - [`Error::NotFound`]: no batch has this id (`what` is `batch`), or its
    ///   community is gone from the directory (`community`).
    /// - [`Error::InvalidInvite`]: the batch's stored templates no longer compile.
    /// - [`Error::Repository`] with `Side::Store`: reading the batch or its counts, or
    ///   a registration owed, failed.
    /// - [`Error::Repository`] with `Side::Directory`: reading the community, or
    ///   marking an owner whose registration was owed, failed.
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
    ///
    /// # Errors
    /// As [`resume_with`](Self::resume_with), and `Repository` with `Side::Store` when
    /// ending the claims fails (then none was ended). An `Err` means nothing was sent;
    /// one that comes after the claims were ended (reading the counts failed) leaves
    /// them ended, so the next `resume` claims those deliveries without waiting.
    ///
    /// [`InvitationStore::revoke_claims`]: crate::repository::InvitationStore::revoke_claims
    pub async fn resume_after_crash(
        &self,
        batch: &BatchId,
        control: RunControl,
    ) -> Result<SendReport> {
        let batch = self.batch(batch).await?;
        self.run_batch(batch, control, true, None).await
    }

    /// Sends again to the owners of a batch whose delivery failed: one call.
    ///
    /// # Errors
    /// - [`Error::NotFound`]: no batch has this id.
    /// - [`Error::Repository`] with `Side::Store`: reading the batch or moving its
    ///   failed deliveries back to pending failed; nothing changed.
    ///
    /// After the failed deliveries are pending again, the errors of
    /// [`resume_with`](Self::resume_with) may follow: nothing was sent, and `resume`
    /// sends them.
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
    pub(super) async fn run_batch(
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
pub(super) fn all_pending(recipients: usize) -> DeliveryCounts {
    DeliveryCounts {
        pending: recipients,
        ..DeliveryCounts::default()
    }
}
