//! # owner-access
//!
//! The Owner Access invitation workflow of HOA and property-management software: a
//! manager picks the unregistered owners of a community who have a usable primary
//! email, writes (or keeps) the prefilled invitation, reviews it, and sends every owner
//! a personal registration email; owners then register through their own link, once.
//!
//! The host owns its owners and delivery and plugs them in through object-safe async
//! ports: [`OwnerRepository`] (its communities and owners) and [`MailTransport`]. The
//! workflow's own state (drafts, batches, tokens, activity) goes through a third,
//! [`InvitationStore`], which the crate ships; the in-memory and SQLite adapters
//! implement both storage ports in one value. The crate owns the rules: who is
//! eligible, one message per owner with nobody else's address in it, a personal
//! single-use link stored only as a hash, durable batches that resume after a crash
//! without losing or doubling anyone.
//!
//! ## The workflow in one example
//!
//! ```
//! use std::sync::Arc;
//! use owner_access::domain::{Community, CommunityId, Owner, OwnerId, PropertyId};
//! use owner_access::eligibility::OwnerFilter;
//! use owner_access::prelude::*;
//! use owner_access::{InMemoryRepository, InMemoryTransport, OwnerAccess, Selection};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let repo = Arc::new(InMemoryRepository::new());
//! let transport = Arc::new(InMemoryTransport::new());
//! let service = OwnerAccess::builder(repo.clone(), transport.clone())
//!     .sender("Owner Portal <no-reply@example.com>")
//!     .portal_url("https://portal.example.com/register")
//!     .build()?;
//!
//! // The host's data: a community and one record per property.
//! let community = CommunityId::new("maple-grove")?;
//! repo.upsert_community(&Community::new(community.clone(), "Maple Grove HOA")).await?;
//! let owner = Owner::new(OwnerId::new("o-1")?, community.clone(), PropertyId::new("unit-1")?, "Ann", "Lee")
//!     .with_primary_email("ann@example.org");
//! repo.upsert_owners(&[owner], owner_access::Clock::now(&owner_access::SystemClock)).await?;
//!
//! // Manage > Unregistered, owners with emails; Select All; compose; review; send.
//! let roster = service.roster(&community, &OwnerFilter::unregistered_with_email()).await?;
//! let invite = service.compose(&community, &Selection::all_eligible(&roster)).await?;
//! let review = service.review(&invite).await?;
//! assert!(review.problems.is_empty());
//! let report = service.send(review).await?;
//! assert_eq!(report.sent, 1);
//!
//! // The owner follows their personal link (here read back from the captured message).
//! let captured = transport.messages();
//! let message = mailparse::parse_mail(&captured[0].bytes)?;
//! let text_part = message.subparts.iter().find(|p| p.ctype.mimetype == "text/plain").unwrap();
//! let text = text_part.get_body()?;
//! let token = owner_access::token::token_from_link(&text).expect("a registration link");
//! service.verify(token).await?; // read-only: safe on GET, where mail scanners click
//! let registration = service.redeem(token).await?;
//! assert!(registration.owner.is_registered());
//! # Ok(())
//! # }
//! ```
//!
//! ## Adapters
//!
//! | adapter | port | feature | for |
//! |---|---|---|---|
//! | [`InMemoryRepository`] | repository | always | demos, tests, small deployments |
//! | [`InMemoryTransport`] | transport | always | tests: records messages, injects faults |
//! | [`FileOutbox`] | transport | always | one `.eml` file per message |
//!
//! A host proves its own adapter with the conformance suites in `testing` (feature
//! `testing`).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

pub mod adapters;
pub mod clock;
pub mod dispatch;
pub mod domain;
pub mod error;
pub mod mime;
pub mod progress;
pub mod repository;
pub mod screens;
pub mod service;
pub mod template;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod transport;

pub use adapters::memory::{InMemoryRepository, InMemoryTransport};
pub use adapters::outbox::FileOutbox;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use adapters::postgres::{
    PostgresDirectory, PostgresRepository, PostgresSettings, PostgresStore,
};
#[cfg(feature = "smtp")]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub use adapters::smtp::{SmtpSettings, SmtpTransport};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use adapters::sqlite::{SqliteDirectory, SqliteRepository, SqliteStore};
pub use async_trait::async_trait;
pub use clock::{Clock, ManualClock, SystemClock};
pub use dispatch::{DEFAULT_CLAIM_LEASE, RetryPolicy, SendOptions, UNREACHABLE_RUNS};
pub use error::{Error, Result, Side};
pub use progress::{Progress, RunControl, StopReason, StopSignal};
pub use repository::{
    InvitationStore, InvitationStoreExt, OwnerDirectory, OwnerRepository, OwnerRepositoryExt,
    OwnerStorage,
};
// The pure types' modules at the root as well, where they were before they moved into
// `domain` (`owner_access::invite::Invite` and `owner_access::domain::invite::Invite`
// name the same type).
pub use domain::{eligibility, invite, selection, token};
pub use screens::review;
pub use screens::{Excluded, Preview, Recipient, Review, Roster, RosterCounts, RosterRow};
pub use selection::Selection;
pub use service::{
    FailedDelivery, MassEditReport, OwnerAccess, OwnerAccessBuilder, Registration, SendReport,
    Settings, SkippedDelivery, SummaryOutcome, VerifiedToken,
};
pub use transport::MailTransport;

/// The traits a program calls methods through, in one `use owner_access::prelude::*;`.
pub mod prelude {
    pub use crate::clock::Clock;
    pub use crate::repository::{
        InvitationStore, InvitationStoreExt, OwnerDirectory, OwnerRepository, OwnerRepositoryExt,
        OwnerStorage,
    };
    pub use crate::transport::MailTransport;
}

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
