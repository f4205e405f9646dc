//! # owner-access
//!
//! The Owner Access invitation workflow of HOA and property-management software:
//! a manager picks the unregistered owners of a community who have a usable primary
//! email, writes (or keeps) the prefilled invitation, reviews it, and sends every owner
//! a personal registration email; owners then register through their own link.
//!
//! The host owns storage and delivery and plugs them in through two ports:
//! [`OwnerRepository`] and [`MailTransport`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod adapters;
pub mod clock;
pub mod domain;
pub mod eligibility;
pub mod error;
pub mod invite;
pub mod mime;
pub mod repository;
pub mod selection;
pub mod template;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;
pub mod transport;

pub use adapters::memory::{InMemoryRepository, InMemoryTransport};
pub use async_trait::async_trait;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use repository::OwnerRepository;
pub use transport::MailTransport;
