//! The two storage ports, both object-safe async traits:
//!
//! - [`OwnerRepository`], the host's: its communities and owners (seven required
//!   methods), with [`OwnerDirectory`] as the optional writing side the crate's own
//!   directories add;
//! - [`InvitationStore`], the workflow's: drafts, batches, deliveries with leases and
//!   fencing, tokens, the activity feed. The crate ships it (in-memory, SQLite).
//!
//! The service ([`OwnerAccess`](crate::OwnerAccess)) is the only place that crosses
//! them, and never inside one of the other's transactions: a mass edit commits in the
//! directory, then the store revokes the changed owners' links and appends the
//! activity; a redeem spends the token in the store, then marks the owner registered in
//! the directory, then appends the activity.
//!
//! Each method's `# Contract` says what every implementation MUST do; the suite in
//! [`crate::testing`] (feature `testing`) checks it. Where uniqueness or single use
//! matters, inserting and updating are separate methods, and the updates that race
//! (claiming a delivery, redeeming a token, changing emails) are compare-and-set.

mod directory;
mod error;
mod store;

pub use directory::{
    EmailEdit, EmailHolder, ImportSession, Marked, OwnerDirectory, OwnerRepository,
    OwnerRepositoryExt,
};
pub use error::{RepoResult, RepositoryError};
pub use store::{
    ClaimHolder, HeldClaims, InvitationStore, InvitationStoreExt, OwedRegistration, RedeemOutcome,
    SendSlots,
};

/// Both ports in one value, as the crate's in-memory and SQLite adapters provide
/// them: what [`OwnerAccess::builder`](crate::OwnerAccess::builder) takes. Implemented
/// for every type that implements both; never implement it by hand.
pub trait OwnerStorage: OwnerDirectory + InvitationStore {}

impl<T: OwnerDirectory + InvitationStore + ?Sized> OwnerStorage for T {}
