//! Reference adapters shipped with the crate.

pub mod outbox;
