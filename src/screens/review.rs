//! Generate & Review: who will receive the invitation, who is left out and why, and
//! what is wrong with the invitation itself.

use std::sync::Arc;

use serde::Serialize;

use crate::domain::{Community, EmailAddress, OwnerId, Timestamp};
use crate::eligibility::Ineligible;
use crate::invite::{Invite, Problem};
use crate::template::CompiledTemplate;

/// An owner who will be sent the invitation: the id and the address, all the stored
/// batch needs. A review of a million owners holds these, not a million owner
/// records; [`OwnerAccess::preview`](crate::OwnerAccess::preview) reads the record
/// when it is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipient {
    /// The owner.
    pub owner: OwnerId,
    /// The address the message goes to.
    pub email: EmailAddress,
}

/// A selected owner who will not be sent anything, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Excluded {
    /// The id as selected.
    pub owner: OwnerId,
    /// The first reason that applies.
    pub reason: Ineligible,
}

/// The result of reviewing an invite. Reviewing mints no token and changes nothing;
/// [`OwnerAccess::send`](crate::OwnerAccess::send) takes it and refuses it while it has
/// problems.
#[derive(Debug, Clone)]
pub struct Review {
    /// The invite as reviewed.
    pub invite: Invite,
    /// Its community.
    pub community: Community,
    /// Every owner who will get a message, in owner-id order.
    pub recipients: Vec<Recipient>,
    /// Every selected owner left out, with the reason, in owner-id order.
    pub excluded: Vec<Excluded>,
    /// Everything wrong with the invite itself; nothing is sent while this is not
    /// empty.
    pub problems: Vec<Problem>,
    /// When the review was made.
    pub reviewed_at: Timestamp,
    pub(crate) template: Option<Arc<CompiledTemplate>>,
}

impl Review {
    /// Whether it can be sent (no problems). A review with no recipients can be sent:
    /// it sends nothing.
    pub fn is_sendable(&self) -> bool {
        self.problems.is_empty() && self.template.is_some()
    }
}

/// What one owner will receive, as shown on the review page. The link in it is a
/// placeholder: no token is minted by a preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// The subject.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
    /// The whole message as it would be sent (with the placeholder link).
    pub message: Vec<u8>,
}
