//! Resend: one owner's fresh link, with the message of their latest batch; and the
//! invite selecting every invited owner who has not registered.

use crate::domain::{CommunityId, Owner, OwnerId};
use crate::eligibility::{AccessFilter, OwnerFilter};
use crate::error::{Error, Result};
use crate::invite::Invite;
use crate::progress::RunControl;
use crate::repository::OwnerRepositoryExt;
use crate::selection::Selection;

use super::reports::SendReport;
use super::send::all_pending;
use super::{OwnerAccess, REVIEW_CHUNK};

impl OwnerAccess {
    /// "Resend to every invited owner who has not registered": an invite selecting
    /// them, to review and send like any other.
    ///
    /// The directory gives the community's unregistered owners; the store says which
    /// of them were sent an invitation (a chunk of owners per call).
    ///
    /// # Errors
    /// - [`Error::NotFound`]: the community does not exist in the directory.
    /// - [`Error::Repository`] with `Side::Directory`: reading the community or its
    ///   unregistered owners failed.
    /// - [`Error::Repository`] with `Side::Store`: reading their invitation states
    ///   failed.
    ///
    /// Nothing is stored.
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

    /// Resends the registration email to one owner: a fresh link (the old one is
    /// revoked when the new message has been accepted and recorded as sent; a resend
    /// that fails or stops leaves it working), with the message of the owner's latest
    /// batch, or the default invitation if there is none.
    ///
    /// # Errors
    /// As [`resend_with`](Self::resend_with): `NotFound` for an unknown owner,
    /// `NotEligible` when the owner cannot be invited, `InvalidInvite`, or a
    /// `Repository` error before anything was sent; the owner's old link keeps working
    /// in every case.
    pub async fn resend(&self, owner: &OwnerId) -> Result<SendReport> {
        self.resend_with(owner, None, RunControl::new()).await
    }

    /// [`resend`](Self::resend) with a message of your own (`invite`, whose selection
    /// is ignored) and a run control.
    ///
    /// # Errors
    /// An `Err` means nothing was sent, and the owner's old link keeps working.
    /// - [`Error::NotFound`]: the owner does not exist in the directory (`what` is
    ///   `owner`), or their community does not (`community`).
    /// - [`Error::NotEligible`]: the owner cannot be invited (registered, no valid
    ///   address, or one another owner record holds too); nothing is stored.
    /// - [`Error::InvalidInvite`]: the message (`invite`, or the latest batch's) has
    ///   problems; nothing is stored.
    /// - [`Error::Repository`] with `Side::Directory`: reading the owner, their
    ///   community or the holders of their address failed; nothing is stored.
    /// - [`Error::Repository`] with `Side::Store`: reading the owner's batches or
    ///   storing the resend's batch failed, and nothing is stored; or, with either
    ///   side, completing a registration owed failed after the batch was stored: then
    ///   it stays pending, and [`resume`](Self::resume) sends it.
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
    /// - [`Error::NotFound`]: the owner does not exist in the directory (`what` is
    ///   `owner`), or their community does not (`community`).
    /// - [`Error::Repository`] with `Side::Directory`: reading the owner or the
    ///   community failed.
    /// - [`Error::Repository`] with `Side::Store`: reading the owner's batches failed.
    ///
    /// Nothing is stored.
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
}
