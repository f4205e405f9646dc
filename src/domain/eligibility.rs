//! Who may be invited, and the Manage screen's filter.
//!
//! An owner is eligible when they are not registered (never invited, or invited and not
//! yet registered), have a primary email, the email is a valid address, and no other
//! owner record in the repository uses the same address. "The same address" is the
//! same mailbox: the addresses' [`delivered_key`](crate::domain::delivered_key)s are
//! equal (the domain IDNA-mapped, needless quoting gone, case folded), so
//! `y@example.org` and `y@ｅｘａｍｐｌｅ.org` are shared. When several reasons apply, the first of [`Ineligible`]'s variants,
//! in declaration order, is reported.

use serde::{Deserialize, Serialize};

use crate::domain::{
    AccessState, EmailAddress, InvalidEmail, InvitationState, Owner, OwnerId, PropertyId, Timestamp,
};

/// Why an owner cannot be sent an invitation. Ordered: when several apply, the first
/// one listed here is the one reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Ineligible {
    /// The id names no owner (of this community).
    UnknownOwner,
    /// Already registered for the portal.
    Registered,
    /// No primary email on record.
    NoEmail,
    /// The primary email is not a usable address.
    InvalidEmail {
        /// Why.
        error: InvalidEmail,
    },
    /// Another owner record uses the same address (the same
    /// [`delivered_key`](crate::domain::delivered_key)); each property needs its own.
    SharedEmail {
        /// The properties of the other records that use it.
        with: Vec<PropertyId>,
    },
}

impl Ineligible {
    /// A stable snake_case code (`unknown_owner`, `registered`, `no_email`,
    /// `invalid_email`, `shared_email`) for logs, JSON and tests.
    pub fn code(&self) -> &'static str {
        match self {
            Ineligible::UnknownOwner => "unknown_owner",
            Ineligible::Registered => "registered",
            Ineligible::NoEmail => "no_email",
            Ineligible::InvalidEmail { .. } => "invalid_email",
            Ineligible::SharedEmail { .. } => "shared_email",
        }
    }
}

impl std::fmt::Display for Ineligible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ineligible::UnknownOwner => f.write_str("no such owner"),
            Ineligible::Registered => f.write_str("already registered"),
            Ineligible::NoEmail => f.write_str("no primary email"),
            Ineligible::InvalidEmail { error } => write!(f, "invalid primary email: {error}"),
            Ineligible::SharedEmail { with } => {
                let with: Vec<&str> = with.iter().map(PropertyId::as_str).collect();
                write!(f, "primary email shared with {}", with.join(", "))
            }
        }
    }
}

/// Whether an owner can be invited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "eligibility", rename_all = "snake_case")]
pub enum Eligibility {
    /// Can be invited, at this address.
    Eligible {
        /// The validated primary email.
        email: EmailAddress,
    },
    /// Cannot be invited.
    Excluded {
        /// Why (the first reason that applies).
        reason: Ineligible,
    },
}

impl Eligibility {
    /// Whether the owner can be invited.
    pub fn is_eligible(&self) -> bool {
        matches!(self, Eligibility::Eligible { .. })
    }

    /// The reason, when excluded.
    pub fn reason(&self) -> Option<&Ineligible> {
        match self {
            Eligibility::Excluded { reason } => Some(reason),
            Eligibility::Eligible { .. } => None,
        }
    }
}

/// Decides an owner's eligibility.
///
/// `owner` is `None` when the id names no owner. `holders` are every owner record in the
/// repository whose primary email has the same comparison key as this owner's
/// (including, or not, the owner itself: it is ignored).
pub fn assess(owner: Option<&Owner>, holders: &[(OwnerId, PropertyId)]) -> Eligibility {
    let excluded = |reason| Eligibility::Excluded { reason };
    let Some(owner) = owner else {
        return excluded(Ineligible::UnknownOwner);
    };
    if owner.is_registered() {
        return excluded(Ineligible::Registered);
    }
    let Some(raw) = owner
        .primary_email
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    else {
        return excluded(Ineligible::NoEmail);
    };
    let email = match EmailAddress::parse(raw) {
        Ok(email) => email,
        Err(error) => return excluded(Ineligible::InvalidEmail { error }),
    };
    let mut with: Vec<PropertyId> = holders
        .iter()
        .filter(|(id, _)| *id != owner.id)
        .map(|(_, property)| property.clone())
        .collect();
    if !with.is_empty() {
        with.sort();
        with.dedup();
        return excluded(Ineligible::SharedEmail { with });
    }
    Eligibility::Eligible { email }
}

/// The access tab of the Manage screen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessFilter {
    /// Everyone.
    #[default]
    All,
    /// Everyone who is not registered, invited or not.
    Unregistered,
    /// Invited and not registered (the link valid or expired).
    Invited,
    /// Registered.
    Registered,
}

/// The "Email Addresses" filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailFilter {
    /// With or without.
    #[default]
    Any,
    /// "Owners with Emails": a non-blank primary email on record (valid or not: an
    /// invalid one is shown, flagged).
    WithEmail,
    /// Without a primary email.
    WithoutEmail,
}

/// The Manage screen's filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerFilter {
    /// The access tab.
    pub access: AccessFilter,
    /// The email filter.
    pub email: EmailFilter,
    /// Text matched, case-insensitively, against first and last name, full name,
    /// property address and primary email.
    pub search: Option<String>,
}

impl OwnerFilter {
    /// Every owner.
    pub fn all() -> Self {
        Self::default()
    }

    /// Unregistered owners with an email: the usual starting point for invitations.
    pub fn unregistered_with_email() -> Self {
        Self {
            access: AccessFilter::Unregistered,
            email: EmailFilter::WithEmail,
            search: None,
        }
    }

    /// Sets the access tab.
    pub fn with_access(mut self, access: AccessFilter) -> Self {
        self.access = access;
        self
    }

    /// Sets the email filter.
    pub fn with_email(mut self, email: EmailFilter) -> Self {
        self.email = email;
        self
    }

    /// Sets the search text.
    pub fn with_search(mut self, search: impl Into<String>) -> Self {
        self.search = Some(search.into());
        self
    }

    /// Whether an owner's own fields pass the filter: what a directory's
    /// [`community_owners`](crate::repository::OwnerRepository::community_owners)
    /// applies. The access tab is judged by the host's registered flag alone:
    /// [`Unregistered`](AccessFilter::Unregistered) and
    /// [`Invited`](AccessFilter::Invited) both keep the unregistered owners, since who
    /// was invited is the store's to say (the service narrows with
    /// [`matches`](Self::matches)). Then the email filter and the search text.
    pub fn matches_owner(&self, owner: &Owner) -> bool {
        let access_ok = match self.access {
            AccessFilter::All => true,
            AccessFilter::Unregistered | AccessFilter::Invited => !owner.is_registered(),
            AccessFilter::Registered => owner.is_registered(),
        };
        // A non-blank address, valid or not: what `email_key` is `Some` for, without
        // working the key out.
        let has_email = owner
            .primary_email
            .as_deref()
            .is_some_and(|e| !e.trim().is_empty());
        let email_ok = match self.email {
            EmailFilter::Any => true,
            EmailFilter::WithEmail => has_email,
            EmailFilter::WithoutEmail => !has_email,
        };
        access_ok && email_ok && self.search_matches(owner)
    }

    /// Whether an owner passes the whole filter at `now`, given the store's invitation
    /// state of the owner (`None`: never invited; expiry is derived from the clock).
    pub fn matches(
        &self,
        owner: &Owner,
        invitation: Option<&InvitationState>,
        now: Timestamp,
    ) -> bool {
        let state = AccessState::of(owner, invitation, now);
        let access_ok = match self.access {
            AccessFilter::All => true,
            AccessFilter::Unregistered => state.is_unregistered(),
            AccessFilter::Invited => matches!(state, AccessState::Invited | AccessState::Expired),
            AccessFilter::Registered => state == AccessState::Registered,
        };
        access_ok && self.matches_owner(owner)
    }

    fn search_matches(&self, owner: &Owner) -> bool {
        let Some(needle) = self
            .search
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return true;
        };
        let needle = needle.to_lowercase();
        [
            owner.first_name.as_str(),
            owner.last_name.as_str(),
            owner.property_address.as_str(),
            owner.primary_email.as_deref().unwrap_or(""),
        ]
        .iter()
        .any(|field| field.to_lowercase().contains(&needle))
            || owner.full_name().to_lowercase().contains(&needle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CommunityId;

    fn owner(id: &str, email: Option<&str>) -> Owner {
        let o = Owner::new(
            OwnerId::new(id).unwrap(),
            CommunityId::new("c").unwrap(),
            PropertyId::new(format!("p-{id}")).unwrap(),
            "Ann",
            "Lee",
        );
        match email {
            Some(e) => o.with_primary_email(e),
            None => o,
        }
    }

    fn holder(id: &str) -> (OwnerId, PropertyId) {
        (
            OwnerId::new(id).unwrap(),
            PropertyId::new(format!("p-{id}")).unwrap(),
        )
    }

    #[test]
    fn reasons_come_in_order() {
        assert_eq!(
            assess(None, &[]).reason().map(Ineligible::code),
            Some("unknown_owner")
        );
        let registered = owner("a", None).with_registered(None);
        assert_eq!(
            assess(Some(&registered), &[holder("b")])
                .reason()
                .map(Ineligible::code),
            Some("registered")
        );
        assert_eq!(
            assess(Some(&owner("a", Some("  "))), &[])
                .reason()
                .map(Ineligible::code),
            Some("no_email")
        );
        assert_eq!(
            assess(Some(&owner("a", Some("bad"))), &[holder("b")])
                .reason()
                .map(Ineligible::code),
            Some("invalid_email")
        );
        assert_eq!(
            assess(
                Some(&owner("a", Some("x@y.org"))),
                &[holder("a"), holder("b")]
            )
            .reason(),
            Some(&Ineligible::SharedEmail {
                with: vec![PropertyId::new("p-b").unwrap()]
            })
        );
        assert!(assess(Some(&owner("a", Some("x@y.org"))), &[holder("a")]).is_eligible());
    }

    #[test]
    fn filter_by_access_email_and_search() {
        let now = Timestamp::from_unix_seconds(1000);
        let o = owner("a", Some("ann@example.org")).with_property_address("12 Elm St");
        assert!(OwnerFilter::unregistered_with_email().matches(&o, None, now));
        assert!(
            !OwnerFilter::all()
                .with_email(EmailFilter::WithoutEmail)
                .matches(&o, None, now)
        );
        assert!(OwnerFilter::all().with_search("elm").matches(&o, None, now));
        assert!(
            OwnerFilter::all()
                .with_search("ann lee")
                .matches(&o, None, now)
        );
        assert!(!OwnerFilter::all().with_search("oak").matches(&o, None, now));
        let invited_tab = OwnerFilter::all().with_access(AccessFilter::Invited);
        assert!(!invited_tab.matches(&o, None, now));
        assert!(
            invited_tab.matches_owner(&o),
            "the directory keeps the unregistered"
        );
        let expired = InvitationState::after(None, now, now);
        assert!(invited_tab.matches(&o, Some(&expired), now));
        assert!(!invited_tab.matches(&o.clone().with_registered(None), Some(&expired), now));
    }
}
