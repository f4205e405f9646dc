//! In-memory adapters: [`InMemoryRepository`] (a complete repository for demos and
//! small deployments) and [`InMemoryTransport`] (records what it is given and can
//! inject delivery faults, for tests).
//!
//! One file a concern: [`InMemoryRepository`] and its lock here, the indexed state it
//! guards in `state`, the directory ports in `directory`, the invitation store in
//! `store`; [`InMemoryTransport`] in `transport`, its fault injection in `faults`.

mod directory;
mod faults;
mod state;
mod store;
mod transport;

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use faults::Fault;
pub use transport::{InMemoryTransport, RecordedMessage};

#[cfg(doc)]
use crate::repository::{InvitationStore, OwnerDirectory, OwnerRepository};
use state::State;

/// Both storage ports ([`OwnerRepository`] with [`OwnerDirectory`], and
/// [`InvitationStore`]) kept in memory: a product feature for demos and
/// small deployments (nothing survives the process), and the reference the
/// conformance suite is written against.
///
/// All state sits behind one mutex, so every method is one atomic step and safe to
/// call from many tasks at once. Lookups are indexed: owners by community and by
/// delivered email key, deliveries per batch with a pending queue and an index of leases
/// by their end (claiming from a large batch costs O(claimed · log n), not O(n)), tokens by
/// hash and by owner, activity per community.
#[derive(Default)]
pub struct InMemoryRepository {
    state: Mutex<State>,
}

impl InMemoryRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every method checks before it writes, so a panic elsewhere cannot leave a
        // half-applied change behind: the data under a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Display for InMemoryRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("in-memory repository")
    }
}

impl fmt::Debug for InMemoryRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("InMemoryRepository")
            .field("communities", &state.communities.len())
            .field("owners", &state.owners.len())
            .field("batches", &state.batches.len())
            .field("tokens", &state.tokens.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_itself() {
        assert_eq!(
            InMemoryRepository::new().to_string(),
            "in-memory repository"
        );
    }
}
