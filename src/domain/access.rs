//! Where an owner stands with the portal: the store's invitation history of the
//! owner, joined with the host's registered flag.

use serde::{Deserialize, Serialize};

use super::{Owner, Timestamp};

/// The invitations an owner has been sent, as the
/// [`InvitationStore`](crate::repository::InvitationStore) keeps them: written in the
/// same step that records a message to the owner as sent. An owner the store has
/// never sent a message to has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationState {
    /// When the first invitation was accepted by the mail server.
    pub first_at: Timestamp,
    /// When the latest one was.
    pub last_at: Timestamp,
    /// How many invitations were accepted for this owner (at least 1).
    pub count: u32,
    /// When the latest invitation's link expires.
    pub expires_at: Timestamp,
}

impl InvitationState {
    /// The state after one more invitation was accepted at `at`, its link valid until
    /// `expires_at`, given the state before (`None`: the first invitation).
    pub fn after(before: Option<&InvitationState>, at: Timestamp, expires_at: Timestamp) -> Self {
        match before {
            None => InvitationState {
                first_at: at,
                last_at: at,
                count: 1,
                expires_at,
            },
            Some(before) => InvitationState {
                first_at: before.first_at,
                last_at: at,
                count: before.count.saturating_add(1),
                expires_at,
            },
        }
    }
}

/// The status derived at a given moment: what the Manage screen shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessState {
    /// Never invited.
    NotInvited,
    /// Invited, the link still valid.
    Invited,
    /// Invited, the link expired.
    Expired,
    /// Registered.
    Registered,
}

impl AccessState {
    /// An owner's status at `now`: registered when the host says so (whatever was
    /// sent), else by the store's invitation state (`None`: never invited), an
    /// invitation whose link has expired showing as [`AccessState::Expired`].
    pub fn of(owner: &Owner, invitation: Option<&InvitationState>, now: Timestamp) -> Self {
        if owner.is_registered() {
            return AccessState::Registered;
        }
        match invitation {
            None => AccessState::NotInvited,
            Some(i) if i.expires_at <= now => AccessState::Expired,
            Some(_) => AccessState::Invited,
        }
    }

    /// Every state except `Registered` counts as "unregistered".
    pub fn is_unregistered(self) -> bool {
        self != AccessState::Registered
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{CommunityId, OwnerId, PropertyId};

    #[test]
    fn expiry_is_derived_from_the_clock_and_registration_wins() {
        let owner = Owner::new(
            OwnerId::new("o1").unwrap(),
            CommunityId::new("c1").unwrap(),
            PropertyId::new("p1").unwrap(),
            "Ann",
            "Lee",
        );
        let t0 = Timestamp::from_unix_seconds(1_000_000);
        let first = InvitationState::after(None, t0, t0 + Duration::from_secs(60));
        assert_eq!(AccessState::of(&owner, None, t0), AccessState::NotInvited);
        assert_eq!(
            AccessState::of(&owner, Some(&first), t0),
            AccessState::Invited
        );
        assert_eq!(
            AccessState::of(&owner, Some(&first), t0 + Duration::from_secs(60)),
            AccessState::Expired
        );
        let later = t0 + Duration::from_secs(5);
        let again = InvitationState::after(Some(&first), later, later);
        assert_eq!((again.first_at, again.last_at, again.count), (t0, later, 2));
        let registered = owner.with_registered(None);
        assert_eq!(
            AccessState::of(&registered, Some(&first), t0),
            AccessState::Registered
        );
    }
}
