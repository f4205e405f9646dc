//! The Manage screen: the directory's owners joined with the store's invitation
//! states, each with their access status and eligibility.

use std::collections::HashMap;

use crate::domain::{AccessState, CommunityId, InvitationState, Owner, OwnerId};
use crate::eligibility::OwnerFilter;
use crate::error::{Error, Result};
use crate::screens::{Roster, RosterCounts, RosterRow};

use super::{OwnerAccess, assess_with};

impl OwnerAccess {
    /// The Manage screen: the community's owners passing `filter`, each with their
    /// access status and eligibility, and the community's counts per status.
    ///
    /// Eligibility takes the whole repository into account (an address shared with an
    /// owner of another community counts as shared). The owners are the directory's,
    /// their invitation states (Invited, Expired, Not invited) the store's, joined
    /// here: one call for the owners, one for their states and one for the
    /// addresses, whatever the size of the community.
    ///
    /// # Errors
    /// - [`Error::NotFound`]: the community does not exist in the directory.
    /// - [`Error::Repository`] with `Side::Directory`: reading the community, its
    ///   owners or the holders of their addresses failed.
    /// - [`Error::Repository`] with `Side::Store`: reading the owners' invitation
    ///   states failed.
    ///
    /// Only reads, except that a registration a crashed redeem left owed is completed
    /// first (see [`redeem`](Self::redeem)): its failure is a `Repository` error from
    /// the store (reading or settling it) or from the directory (marking the owner);
    /// what was completed before it stays completed, the rest waits for the next call.
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
}
