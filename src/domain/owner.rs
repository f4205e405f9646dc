//! Owner records and their portal access status.

use serde::{Deserialize, Serialize};

use super::{CommunityId, EmailAddress, OwnerId, PropertyId, Timestamp, delivered_key};

/// One owner of one property. A person who owns two units is two records with two ids
/// and needs two addresses ("each individual property requires a separate email
/// address").
///
/// `primary_email` is kept exactly as the host gave it, even when it is not a valid
/// address or another record uses it too: such owners are flagged in the roster, never
/// dropped or "fixed".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The record's id, unique in the repository.
    pub id: OwnerId,
    /// The community the property belongs to.
    pub community: CommunityId,
    /// The property this record is for.
    pub property: PropertyId,
    /// First name, for `{{owner.first_name}}`.
    pub first_name: String,
    /// Last name, for `{{owner.last_name}}`.
    pub last_name: String,
    /// The property's address, for `{{property.address}}`.
    pub property_address: String,
    /// The primary email as the host stores it, possibly invalid or shared.
    pub primary_email: Option<String>,
    /// Where the owner stands with the portal. Managed by the workflow; see
    /// [`Owner::merge_from_host`] for how a host's upsert treats it.
    pub access: AccessStatus,
}

impl Owner {
    /// A new, never invited owner.
    pub fn new(
        id: OwnerId,
        community: CommunityId,
        property: PropertyId,
        first_name: impl Into<String>,
        last_name: impl Into<String>,
    ) -> Self {
        Self {
            id,
            community,
            property,
            first_name: first_name.into(),
            last_name: last_name.into(),
            property_address: String::new(),
            primary_email: None,
            access: AccessStatus::NotInvited,
        }
    }

    /// Sets the property address.
    pub fn with_property_address(mut self, address: impl Into<String>) -> Self {
        self.property_address = address.into();
        self
    }

    /// Sets the primary email, kept as given.
    pub fn with_primary_email(mut self, email: impl Into<String>) -> Self {
        self.primary_email = Some(email.into());
        self
    }

    /// Sets the access status.
    pub fn with_access(mut self, access: AccessStatus) -> Self {
        self.access = access;
        self
    }

    /// "First Last", trimmed, with control characters (CR, LF...) turned into spaces so
    /// the name is safe in a header.
    pub fn full_name(&self) -> String {
        let joined = format!("{} {}", self.first_name.trim(), self.last_name.trim());
        let cleaned: String = joined
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The primary email parsed, when there is one and it is valid.
    pub fn email_address(&self) -> Option<EmailAddress> {
        self.primary_email
            .as_deref()
            .and_then(|raw| EmailAddress::parse(raw).ok())
    }

    /// The comparison key of the primary email ([`delivered_key`]: the mailbox mail to
    /// it reaches), when there is a non-blank one, valid or not.
    pub fn email_key(&self) -> Option<String> {
        self.primary_email
            .as_deref()
            .map(delivered_key)
            .filter(|k| !k.is_empty())
    }

    /// Whether the owner has registered for the portal.
    pub fn is_registered(&self) -> bool {
        matches!(self.access, AccessStatus::Registered { .. })
    }

    /// The record that an upsert from the host stores, given what is stored now.
    ///
    /// Host data (names, property, address, email) comes from `incoming`. The access
    /// status is the workflow's: registration is sticky (a host import never
    /// un-registers an owner), an invitation in progress is kept, and a host that says
    /// the owner is registered wins. The second value says whether the primary email
    /// changed (compared by [`delivered_key`]), in which case the caller must revoke the owner's
    /// outstanding tokens in the same step.
    pub fn merge_from_host(stored: Option<&Owner>, incoming: &Owner) -> (Owner, bool) {
        let Some(stored) = stored else {
            return (incoming.clone(), false);
        };
        let mut merged = incoming.clone();
        merged.access = match (&stored.access, &incoming.access) {
            (AccessStatus::Registered { .. }, _) => stored.access.clone(),
            (_, AccessStatus::Registered { .. }) => incoming.access.clone(),
            (AccessStatus::Invited { .. }, _) => stored.access.clone(),
            _ => incoming.access.clone(),
        };
        let email_changed = stored.email_key() != incoming.email_key();
        (merged, email_changed)
    }
}

/// Where an owner stands with the portal, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AccessStatus {
    /// Never sent an invitation.
    NotInvited,
    /// Sent at least one invitation, not registered yet.
    Invited {
        /// When the first invitation was accepted by the mail server.
        first_at: Timestamp,
        /// When the latest one was.
        last_at: Timestamp,
        /// How many invitations were accepted for this owner.
        count: u32,
        /// When the latest invitation's link expires.
        expires_at: Timestamp,
    },
    /// Registered for the portal (through a link, or as the host says).
    Registered {
        /// When, if known.
        at: Option<Timestamp>,
    },
}

impl AccessStatus {
    /// The status as shown at `now`: an invitation whose link has expired shows as
    /// [`AccessState::Expired`].
    pub fn state_at(&self, now: Timestamp) -> AccessState {
        match self {
            AccessStatus::NotInvited => AccessState::NotInvited,
            AccessStatus::Invited { expires_at, .. } if *expires_at <= now => AccessState::Expired,
            AccessStatus::Invited { .. } => AccessState::Invited,
            AccessStatus::Registered { .. } => AccessState::Registered,
        }
    }

    /// The status after one more invitation was accepted at `at`, valid until
    /// `expires_at`. A registered owner stays registered.
    pub fn after_invitation(&self, at: Timestamp, expires_at: Timestamp) -> AccessStatus {
        match self {
            AccessStatus::Registered { .. } => self.clone(),
            AccessStatus::NotInvited => AccessStatus::Invited {
                first_at: at,
                last_at: at,
                count: 1,
                expires_at,
            },
            AccessStatus::Invited {
                first_at, count, ..
            } => AccessStatus::Invited {
                first_at: *first_at,
                last_at: at,
                count: count.saturating_add(1),
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
    /// Every state except `Registered` counts as "unregistered".
    pub fn is_unregistered(self) -> bool {
        self != AccessState::Registered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner::new(
            OwnerId::new("o1").unwrap(),
            CommunityId::new("c1").unwrap(),
            PropertyId::new("p1").unwrap(),
            " Ann\r\n",
            "Lee ",
        )
        .with_primary_email("Ann@Example.org ")
    }

    #[test]
    fn full_name_is_header_safe() {
        assert_eq!(owner().full_name(), "Ann Lee");
    }

    #[test]
    fn expiry_is_derived_from_the_clock() {
        let t0 = Timestamp::from_unix_seconds(1_000_000);
        let status =
            AccessStatus::NotInvited.after_invitation(t0, t0 + std::time::Duration::from_secs(60));
        assert_eq!(status.state_at(t0), AccessState::Invited);
        assert_eq!(
            status.state_at(t0 + std::time::Duration::from_secs(60)),
            AccessState::Expired
        );
        let again = status.after_invitation(t0, t0);
        assert!(matches!(again, AccessStatus::Invited { count: 2, .. }));
    }

    #[test]
    fn host_upsert_never_unregisters_and_detects_email_change() {
        let registered = owner().with_access(AccessStatus::Registered { at: None });
        let incoming = owner().with_primary_email("ann@example.org");
        let (merged, changed) = Owner::merge_from_host(Some(&registered), &incoming);
        assert!(merged.is_registered());
        assert!(!changed, "same address after normalisation");
        let moved = owner().with_primary_email("other@example.org");
        let (_, changed) = Owner::merge_from_host(Some(&registered), &moved);
        assert!(changed);
    }
}
