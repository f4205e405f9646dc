//! One owner's merge fields, filled from their record and the community's, the same
//! way for a preview and for a send.

use crate::domain::{Community, Owner, Timestamp};

/// The values of the merge fields for one owner's message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeFields {
    /// `owner.first_name`
    pub first_name: String,
    /// `owner.last_name`
    pub last_name: String,
    /// `owner.full_name`
    pub full_name: String,
    /// `property.address`
    pub property_address: String,
    /// `community.name`
    pub community_name: String,
    /// `registration_url`: the owner's personal link.
    pub registration_url: String,
    /// `expires_on`: when the link expires, as a person reads it, in the community's
    /// time zone (UTC unless it has one): `15 December 2026 at 14:30 UTC`.
    pub expires_on: String,
    /// `portal_url`: the portal's URL without a token.
    pub portal_url: String,
    /// `reply_to`: where the owner's questions go (the message's Reply-To: the
    /// community's unless the manager changed it); empty when there is none.
    pub reply_to: String,
    /// `community.logo_url`: the community's logo, empty when it has none.
    pub logo_url: String,
    /// `community.accent_color`: the community's accent colour (`#rrggbb`), or
    /// [`crate::domain::DEFAULT_ACCENT_COLOR`].
    pub accent_color: String,
}

impl MergeFields {
    /// The fields of `owner`'s message: names and property address from the record,
    /// the community's name and branding (its default accent colour when it set
    /// none), the link, its expiry as the community reads it, and `reply_to` (the
    /// message's Reply-To, or empty when there is none).
    pub fn for_owner(
        owner: &Owner,
        community: &Community,
        registration_url: String,
        expires_at: Timestamp,
        portal_url: &str,
        reply_to: &str,
    ) -> Self {
        Self {
            first_name: owner.first_name.clone(),
            last_name: owner.last_name.clone(),
            full_name: owner.full_name(),
            property_address: owner.property_address.clone(),
            community_name: community.name.clone(),
            registration_url,
            expires_on: community.format_time(expires_at),
            portal_url: portal_url.to_owned(),
            reply_to: reply_to.to_owned(),
            logo_url: community.branding.logo_url().unwrap_or_default().to_owned(),
            accent_color: community.branding.accent_color_or_default().to_owned(),
        }
    }
}
