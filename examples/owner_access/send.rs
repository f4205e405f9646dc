//! Sending: `send`, `draft send`, `resend`, and a batch's `resume` and `retry`, each
//! with its progress on stderr and its report on stdout; the exit status says how the
//! batch ended.

use owner_access::domain::{BatchId, DraftId, OwnerId};
use owner_access::invite::Invite;
use owner_access::{Error, OwnerAccess, SendReport};

use crate::app::App;
use crate::args::{MessageArgs, SelectArgs, TransportArgs};
use crate::compose::apply_message;
use crate::failure::{Failure, id};
use crate::{output, progress};

impl App {
    /// `send`: review the invite from the flags, then send it.
    pub async fn send(
        &self,
        community: &str,
        select: &SelectArgs,
        message: &MessageArgs,
        transport: &TransportArgs,
        json: bool,
    ) -> Result<u8, Failure> {
        let service = self.service(message, transport).await?;
        let invite = self.invite(&service, community, select, message).await?;
        review_and_send(&service, &invite, json).await
    }

    /// `draft send`: review a saved draft again, then send it.
    pub async fn send_draft(
        &self,
        draft: &str,
        transport: &TransportArgs,
        json: bool,
    ) -> Result<u8, Failure> {
        let draft: DraftId = id("draft", draft)?;
        let service = self.service(&MessageArgs::defaults(), transport).await?;
        let invite = service.load_draft(&draft).await?;
        review_and_send(&service, &invite, json).await
    }

    /// `resend`: one owner, a fresh link (the old one is revoked once the new
    /// message is accepted).
    pub async fn resend(
        &self,
        owner: &str,
        message: &MessageArgs,
        transport: &TransportArgs,
        json: bool,
    ) -> Result<u8, Failure> {
        let owner: OwnerId = id("owner", owner)?;
        let service = self.service(message, transport).await?;
        // The owner's latest message (with its From and portal URL), and the
        // MESSAGE flags given on top of it.
        let invite = if message.given() {
            let latest = service.compose_resend(&owner).await?;
            Some(apply_message(latest, message)?)
        } else {
            None
        };
        let report =
            progress::run_with_progress(|control| service.resend_with(&owner, invite, control))
                .await?;
        finish(&report, json)
    }

    /// `resume`: what is still pending in a batch, waiting for other senders'
    /// leases unless `--take-over`.
    pub async fn resume(
        &self,
        batch: &str,
        take_over: bool,
        transport: &TransportArgs,
        json: bool,
    ) -> Result<u8, Failure> {
        let batch: BatchId = id("batch", batch)?;
        let service = self.service(&MessageArgs::defaults(), transport).await?;
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

    /// `retry`: the owners of a batch whose delivery failed, again.
    pub async fn retry(
        &self,
        batch: &str,
        transport: &TransportArgs,
        json: bool,
    ) -> Result<u8, Failure> {
        let batch: BatchId = id("batch", batch)?;
        let service = self.service(&MessageArgs::defaults(), transport).await?;
        let report =
            progress::run_with_progress(|control| service.retry_failed(&batch, control)).await?;
        finish(&report, json)
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

/// Prints the report; the exit status says how the batch ended.
fn finish(report: &SendReport, json: bool) -> Result<u8, Failure> {
    if json {
        output::write_stdout(|out| output::write_report_json(report, out))?;
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
