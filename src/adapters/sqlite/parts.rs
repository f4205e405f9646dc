//! Which parts of a file's schema a [`SqliteHandle`](super::SqliteHandle) opens and
//! serves: its type parameter. [`Both`] is [`SqliteRepository`](super::SqliteRepository),
//! [`Directory`] is [`SqliteDirectory`](super::SqliteDirectory), [`Store`] is
//! [`SqliteStore`](super::SqliteStore). Sealed: the three are all there is.

/// The parts a handle opens (each is migrated on open) and the ports it implements.
pub trait Parts: sealed::Sealed + Send + Sync + 'static {
    /// How the handle names itself, in its `Display` and in the errors it returns.
    const NAME: &'static str;
    /// Whether it opens the directory part (communities and owners).
    const DIRECTORY: bool;
    /// Whether it opens the store part (the workflow's state).
    const STORE: bool;
}

/// Parts that include the directory: the handle implements
/// [`OwnerRepository`](crate::repository::OwnerRepository) and
/// [`OwnerDirectory`](crate::repository::OwnerDirectory).
pub trait HoldsDirectory: Parts {}

/// Parts that include the store: the handle implements
/// [`InvitationStore`](crate::repository::InvitationStore).
pub trait HoldsStore: Parts {}

/// The directory and the store, in one file: both ports.
#[derive(Debug)]
pub enum Both {}

/// The directory part alone: communities and owners.
#[derive(Debug)]
pub enum Directory {}

/// The store part alone: drafts, batches, deliveries, tokens, invitation states, the
/// registrations owed and the activity feed, beside a host's own tables of owners.
#[derive(Debug)]
pub enum Store {}

impl Parts for Both {
    const NAME: &'static str = "SQLite repository";
    const DIRECTORY: bool = true;
    const STORE: bool = true;
}

impl Parts for Directory {
    const NAME: &'static str = "SQLite directory";
    const DIRECTORY: bool = true;
    const STORE: bool = false;
}

impl Parts for Store {
    const NAME: &'static str = "SQLite store";
    const DIRECTORY: bool = false;
    const STORE: bool = true;
}

impl HoldsDirectory for Both {}
impl HoldsDirectory for Directory {}
impl HoldsStore for Both {}
impl HoldsStore for Store {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Both {}
    impl Sealed for super::Directory {}
    impl Sealed for super::Store {}
}
