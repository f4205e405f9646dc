//! What the manager's screens show, made by the workflow from the ports' data: the
//! Manage screen's [`Roster`] and the Review screen's [`Review`]. They hold no I/O and
//! change nothing; a host renders them.

pub mod review;
pub mod roster;

pub use review::{Excluded, Preview, Recipient, Review};
pub use roster::{Roster, RosterCounts, RosterRow};
