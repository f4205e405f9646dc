//! Communities.

use serde::{Deserialize, Serialize};

use super::{CommunityId, EmailAddress};

/// A community (an HOA, a condominium, a building) whose owners are invited together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Community {
    /// The host's id.
    pub id: CommunityId,
    /// The name owners know it by; shown in the invitation (`{{community.name}}`).
    pub name: String,
    /// Where owners' replies go by default (an invitation's Reply-To starts as this).
    pub reply_to: Option<EmailAddress>,
}

impl Community {
    /// A community without a reply-to address.
    pub fn new(id: CommunityId, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            reply_to: None,
        }
    }

    /// Sets the default Reply-To.
    pub fn with_reply_to(mut self, reply_to: EmailAddress) -> Self {
        self.reply_to = Some(reply_to);
        self
    }
}
