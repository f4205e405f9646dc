//! Plain data with no I/O: ids, addresses, communities, owners, their invitation state,
//! batches and deliveries, tokens as stored, the activity feed.

mod access;
mod activity;
mod batch;
mod branding;
mod community;
mod email;
mod ids;
mod owner;
mod timestamp;

pub mod eligibility;
pub mod invite;
pub mod selection;
pub mod token;

pub use access::{AccessState, InvitationState};
pub use activity::{ActivityEntry, ActivityKind, Page};
pub use batch::{
    Batch, Delivery, DeliveryCounts, DeliveryOutcome, DeliveryState, Draft, NewBatch, SkipReason,
};
pub use branding::{
    Branding, DEFAULT_ACCENT_COLOR, InvalidBranding, InvalidTimeZone, TimeZoneName,
};
pub use community::Community;
pub use email::{
    DELIVERED_KEY_VERSION, EmailAddress, InvalidEmail, InvalidMailbox, MAX_ADDRESS_LEN, Mailbox,
    delivered_key,
};
pub use ids::{
    BatchId, CommunityId, DraftId, InvalidId, MAX_ID_LEN, OwnerId, PropertyId, SenderId,
};
pub use owner::{Owner, Registered};
pub use timestamp::Timestamp;
pub use token::{TokenHash, TokenRecord, TokenRejection, TokenState};
