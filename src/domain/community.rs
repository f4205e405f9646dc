//! Communities.

use serde::{Deserialize, Serialize};

use super::{Branding, CommunityId, EmailAddress, TimeZoneName};

/// A community (an HOA, a condominium, a building) whose owners are invited together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Community {
    /// The host's id.
    pub id: CommunityId,
    /// The name owners know it by; shown in the invitation (`{{community.name}}`).
    pub name: String,
    /// Where owners' replies go by default (an invitation's Reply-To starts as this).
    pub reply_to: Option<EmailAddress>,
    /// The time zone the dates of its letters are shown in (the links' expiry,
    /// `{{expires_on}}`); `None`: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<TimeZoneName>,
    /// The logo and accent colour of its letters (`{{community.logo_url}}`,
    /// `{{community.accent_color}}`); empty: no logo, the default colour.
    #[serde(default, skip_serializing_if = "Branding::is_empty")]
    pub branding: Branding,
}

impl Community {
    /// A community without a reply-to address.
    pub fn new(id: CommunityId, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            reply_to: None,
            time_zone: None,
            branding: Branding::default(),
        }
    }

    /// Sets the time zone of its letters' dates.
    pub fn with_time_zone(mut self, zone: TimeZoneName) -> Self {
        self.time_zone = Some(zone);
        self
    }

    /// Sets its letters' branding.
    pub fn with_branding(mut self, branding: Branding) -> Self {
        self.branding = branding;
        self
    }

    /// A moment as its letters show it: in its time zone, or UTC
    /// (`15 December 2026 at 14:30 UTC`).
    pub fn format_time(&self, at: super::Timestamp) -> String {
        match &self.time_zone {
            Some(zone) => zone.format(at),
            None => super::branding::format_utc(at),
        }
    }

    /// Sets the default Reply-To.
    pub fn with_reply_to(mut self, reply_to: EmailAddress) -> Self {
        self.reply_to = Some(reply_to);
        self
    }
}
