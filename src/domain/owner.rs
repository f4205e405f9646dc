//! Owner records: what the host owns about each owner, registration included.

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
    /// Whether the owner has registered for the portal (and when, if known): the
    /// host's own flag, which a redeem sets through
    /// [`OwnerRepository::mark_registered`](crate::repository::OwnerRepository::mark_registered).
    /// `None` while not registered. The invitations sent to the owner are the
    /// store's ([`InvitationState`](super::InvitationState)), not the owner's.
    #[serde(default)]
    pub registered: Option<Registered>,
}

/// An owner's registration, as the host keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// When, if known (a host import may only say that the owner is registered).
    pub at: Option<Timestamp>,
}

impl Owner {
    /// A new, unregistered owner.
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
            registered: None,
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

    /// Marks the owner registered, at `at` when known.
    pub fn with_registered(mut self, at: Option<Timestamp>) -> Self {
        self.registered = Some(Registered { at });
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
        self.registered.is_some()
    }

    /// The record that an upsert from the host stores, given what is stored now.
    ///
    /// Host data (names, property, address, email) comes from `incoming`.
    /// Registration is sticky (a host import never un-registers an owner) and a host
    /// that says the owner is registered wins. The second value says whether the
    /// primary email changed (compared by [`delivered_key`]), in which case the caller
    /// must revoke the owner's outstanding tokens.
    pub fn merge_from_host(stored: Option<&Owner>, incoming: &Owner) -> (Owner, bool) {
        let Some(stored) = stored else {
            return (incoming.clone(), false);
        };
        let mut merged = incoming.clone();
        merged.registered = stored.registered.or(incoming.registered);
        let email_changed = stored.email_key() != incoming.email_key();
        (merged, email_changed)
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
    fn host_upsert_never_unregisters_and_detects_email_change() {
        let registered = owner().with_registered(None);
        let incoming = owner().with_primary_email("ann@example.org");
        let (merged, changed) = Owner::merge_from_host(Some(&registered), &incoming);
        assert!(merged.is_registered());
        assert!(!changed, "same address after normalisation");
        let moved = owner().with_primary_email("other@example.org");
        let (merged, changed) = Owner::merge_from_host(Some(&registered), &moved);
        assert!(changed);
        assert!(merged.is_registered());
        let at = Timestamp::from_unix_seconds(7);
        let (merged, _) =
            Owner::merge_from_host(Some(&owner()), &owner().with_registered(Some(at)));
        assert_eq!(merged.registered, Some(Registered { at: Some(at) }));
    }
}
