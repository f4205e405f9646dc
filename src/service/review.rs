//! Generate & Review: who receives the invite, who is left out and why, what is
//! wrong with it; and a recipient's preview.

use std::sync::Arc;

use crate::domain::{BatchId, CommunityId, Mailbox, Owner, OwnerId};
use crate::eligibility::{Eligibility, Ineligible};
use crate::error::{Error, Result};
use crate::invite::Invite;
use crate::mime::{MessageFrame, message_id};
use crate::repository::OwnerRepositoryExt;
use crate::review::{Excluded, Preview, Recipient, Review};
use crate::template::{CompiledTemplate, MergeFields};
use crate::token::{RegistrationToken, registration_link};

use super::{OwnerAccess, REVIEW_CHUNK, assess_with};

impl OwnerAccess {
    /// Generate & Review: every recipient, every excluded owner with the reason, every
    /// problem. Mints no token and changes nothing.
    ///
    /// # Errors
    /// Problems with the invite are not errors: they are in [`Review::problems`].
    /// - [`Error::NotFound`]: the invite's community does not exist in the directory.
    /// - [`Error::Repository`] with `Side::Directory`: reading the community, the
    ///   selected owners or the holders of their addresses failed.
    ///
    /// Nothing is stored or sent, except that a registration a crashed redeem left owed
    /// is completed first (see [`redeem`](Self::redeem)): its failure is a `Repository`
    /// error from the store (reading or settling it) or from the directory (marking the
    /// owner); what was completed before it stays completed, the rest waits for the
    /// next call.
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
    /// - [`Error::InvalidInvite`]: the review's templates do not compile, or this
    ///   owner's message does not render.
    /// - [`Error::NotFound`]: the owner is not one of the review's recipients (`what`
    ///   is `recipient`), or their record is gone from the directory (`owner`).
    /// - [`Error::Repository`] with `Side::Directory`: reading the owner's record
    ///   failed.
    ///
    /// Nothing is stored or sent.
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
}
