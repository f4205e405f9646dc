//! The host's port: communities and owners ([`OwnerRepository`]), with the optional
//! writing side ([`OwnerDirectory`], [`ImportSession`]) the crate's own directories add.

use std::fmt;

use async_trait::async_trait;

use crate::domain::{Community, CommunityId, Owner, OwnerId, PropertyId, Timestamp};
use crate::eligibility::OwnerFilter;

use super::RepoResult;

/// One row of a mass edit: the owner and their new primary email (`None` clears it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailEdit {
    /// The owner.
    pub owner: OwnerId,
    /// The new address as typed (the service validates it before the repository sees
    /// it).
    pub email: Option<String>,
}

/// An owner holding a given address (see [`OwnerRepository::email_holders`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailHolder {
    /// The comparison key of the address ([`delivered_key`](crate::domain::delivered_key)).
    pub key: String,
    /// The owner record.
    pub owner: OwnerId,
    /// Its property.
    pub property: PropertyId,
}

/// What [`OwnerRepository::mark_registered`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marked {
    /// The owner is registered: by this call, or already before it (the mark is
    /// idempotent). The owner as stored after the call.
    Registered(Box<Owner>),
    /// The owner's primary email is no longer the address the link was sent to (their
    /// `delivered_key`s differ): nothing changed, and the redeem answers as for a
    /// revoked link.
    AddressChanged,
    /// No such owner: nothing changed.
    UnknownOwner,
}

/// The host's port: its communities and owners, read by the workflow, plus the two
/// writes the workflow makes to them (a mass edit of primary emails, the registered
/// mark).
///
/// This is all a host with its own owner tables implements: seven required methods
/// and two optional ones with defaults
/// ([`shared_email_holders`](Self::shared_email_holders),
/// [`community_owner_ids`](Self::community_owner_ids)). The
/// workflow's own state (drafts, batches, claims, tokens, invitation history,
/// activity) is the [`InvitationStore`](super::InvitationStore)'s, which the crate ships; conveniences such as
/// [`owner`](OwnerRepositoryExt::owner) are in [`OwnerRepositoryExt`]; writing owners
/// from host data (upserts, imports) is the optional [`OwnerDirectory`].
///
/// Object safe: hold it as `Arc<dyn OwnerRepository>`. Implementations must be safe to
/// call concurrently from many tasks and many processes sharing the store.
#[async_trait]
pub trait OwnerRepository: Send + Sync + fmt::Display {
    /// A community by id.
    ///
    /// # Contract
    /// - A missing community is `Ok(None)`, not an error.
    async fn community(&self, id: &CommunityId) -> RepoResult<Option<Community>>;

    /// Every community, in any order: what a host's CLI or admin screen lists.
    ///
    /// # Contract
    /// - Each community [`community`](Self::community) would return, once.
    async fn communities(&self) -> RepoResult<Vec<Community>>;

    /// Several owners by id, in one round trip.
    ///
    /// # Contract
    /// - Returns the owners that exist, in any order; missing ids are left out.
    async fn owners(&self, ids: &[OwnerId]) -> RepoResult<Vec<Owner>>;

    /// The owners of a community whose own fields pass a filter.
    ///
    /// # Contract
    /// - Returns exactly the community's owners for which
    ///   [`OwnerFilter::matches_owner`]`(owner)` holds, in any order: the owners' own
    ///   fields only (registered or not, email, search text). An
    ///   [`Invited`](crate::eligibility::AccessFilter::Invited) tab asks for the
    ///   unregistered owners; which of them were invited is the
    ///   [`InvitationStore`](super::InvitationStore)'s to say, and the service narrows.
    /// - A community with no owners (or that does not exist) gives an empty list.
    async fn community_owners(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<Owner>>;

    /// The ids of the owners [`community_owners`](Self::community_owners) returns:
    /// what selecting a whole community needs, without every owner record of it in
    /// memory at once (a million owners are about 400 MB as records, 40 MB as ids).
    ///
    /// # Contract
    /// - Exactly the ids of `community_owners(community, filter)`, each once, in any
    ///   order. The default calls `community_owners`; a store that can answer from
    ///   its id column should override it.
    async fn community_owner_ids(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<OwnerId>> {
        Ok(self
            .community_owners(community, filter)
            .await?
            .into_iter()
            .map(|o| o.id)
            .collect())
    }

    /// Every owner in the whole repository (every community) whose primary email has
    /// one of these comparison keys: what the "shared address" rule needs, for a whole
    /// roster in one call.
    ///
    /// # Contract
    /// - A stored email matches a key when its
    ///   [`delivered_key`](crate::domain::delivered_key) (what
    ///   [`Owner::email_key`] gives) equals the key's own `delivered_key`, valid or
    ///   not: `y@ｅｘａｍｐｌｅ.org` is held under `y@example.org`. A store that keeps
    ///   keys records the [`DELIVERED_KEY_VERSION`](crate::domain::DELIVERED_KEY_VERSION)
    ///   they were made with and computes them again when it changes.
    /// - Returns one [`EmailHolder`] per (key, owner) match, in any order.
    async fn email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>>;

    /// [`email_holders`](Self::email_holders) of the keys that more than one owner
    /// holds: all that a review needs to find shared addresses. Most addresses are
    /// held once, so a store that can count holders saves returning them.
    ///
    /// # Contract
    /// - Exactly the holders `email_holders` returns for these keys, less those of
    ///   keys with a single holder, in any order. The default filters
    ///   `email_holders`; a wrapper should forward it.
    async fn shared_email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        let mut holders = self.email_holders(keys).await?;
        let mut count: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for h in &holders {
            *count.entry(h.key.clone()).or_default() += 1;
        }
        holders.retain(|h| count[&h.key] > 1);
        Ok(holders)
    }

    /// Changes primary emails, all or nothing (Mass Edit).
    ///
    /// # Contract
    /// - Every owner must exist, else `NotFound` and nothing changes.
    /// - Compare-and-set on uniqueness: if, with the edits applied, any edited owner's
    ///   new non-blank address (its `delivered_key`) would be held by an owner outside the
    ///   edit, or by two edited owners, the call fails with `Precondition` and nothing
    ///   changes. (Addresses already shared among *unedited* owners do not matter.)
    /// - Returns the ids whose address changed (by `delivered_key`).
    /// - Touches owners only: the workflow revokes the changed owners' links and
    ///   appends the activity entries in the [`InvitationStore`](super::InvitationStore) after this commits
    ///   (and an old link stops working anyway once its address is no longer the
    ///   owner's).
    async fn update_emails(&self, edits: &[EmailEdit]) -> RepoResult<Vec<OwnerId>>;

    /// Marks an owner registered through a link sent to `sent_to`: the middle step of
    /// a redeem.
    ///
    /// # Contract
    /// - Compare-and-set on the address: when the owner's primary email no longer has
    ///   the [`delivered_key`](crate::domain::delivered_key) of `sent_to`, nothing
    ///   changes and the answer is [`Marked::AddressChanged`].
    /// - Idempotent: an owner already registered stays as stored and the answer is
    ///   [`Marked::Registered`] (a redeem completed after a crash calls it again).
    /// - Otherwise the owner becomes registered at `at` and the answer is
    ///   [`Marked::Registered`] with the owner as stored after the change.
    /// - A missing owner is [`Marked::UnknownOwner`].
    async fn mark_registered(
        &self,
        owner: &OwnerId,
        sent_to: &str,
        at: Timestamp,
    ) -> RepoResult<Marked>;
}

/// Conveniences over [`OwnerRepository`], for every implementation (`Arc<dyn …>`
/// included): implementors never write these, so a wrapper cannot get them wrong.
#[async_trait]
pub trait OwnerRepositoryExt: OwnerRepository {
    /// An owner by id (`Ok(None)` when missing): [`owners`](OwnerRepository::owners)
    /// of one id.
    async fn owner(&self, id: &OwnerId) -> RepoResult<Option<Owner>> {
        Ok(self.owners(std::slice::from_ref(id)).await?.pop())
    }
}

impl<T: OwnerRepository + ?Sized> OwnerRepositoryExt for T {}

/// The optional writing side of a directory: storing communities and owners from host
/// data. The crate's own directories ([`InMemoryRepository`](crate::InMemoryRepository),
/// [`SqliteRepository`](crate::adapters::sqlite::SqliteRepository)) implement it; a
/// host whose owners live in its own tables skips it (its application writes them).
#[async_trait]
pub trait OwnerDirectory: OwnerRepository {
    /// Inserts or replaces a community.
    ///
    /// # Contract
    /// - A later [`community`](OwnerRepository::community) returns exactly what was
    ///   stored.
    async fn upsert_community(&self, community: &Community) -> RepoResult<()>;

    /// Inserts or updates owners from host data, all or nothing.
    ///
    /// # Contract
    /// - One atomic step: either every owner is stored or none is.
    /// - Each stored record is [`Owner::merge_from_host`]`(stored, incoming)`: a
    ///   registered owner stays registered.
    /// - When that merge reports a changed primary email, the owner's live and pending
    ///   tokens are revoked at `now` in the same step where the store shares the directory's
    ///   transaction (the crate's combined adapters); links are bound to the address
    ///   they were sent to in any case.
    /// - Addresses are stored as given, even invalid or shared with another owner.
    async fn upsert_owners(&self, owners: &[Owner], now: Timestamp) -> RepoResult<()>;

    /// Starts an import: communities and owners from host data, written in chunks of
    /// the caller's choosing and made visible in one step by
    /// [`ImportSession::commit`]. What an import of a large community needs: one
    /// transaction without the whole file in memory at once.
    ///
    /// # Contract
    /// - Nothing written through the session is visible, to this store's other calls
    ///   or to anyone else, before `commit` returns `Ok`; then all of it is, at once.
    /// - Dropping the session without committing, or any error from one of its calls
    ///   (the commit included), keeps nothing of it.
    /// - [`ImportSession::upsert_communities`] stores as
    ///   [`upsert_community`](Self::upsert_community) does;
    ///   [`ImportSession::upsert_owners`] as [`upsert_owners`](Self::upsert_owners)
    ///   does, with `now` for revoked tokens. A later chunk sees the earlier ones: an
    ///   owner given twice ends as the second merged onto the first.
    /// - While a session is open, other writes may wait for it (a store with one
    ///   writer holds it until the session ends: with SQLite, another write waits up
    ///   to its busy time-out and then fails as `Unavailable`).
    /// - The default keeps every chunk in memory until `commit`, then calls
    ///   `upsert_community` for each community and `upsert_owners` once for all the
    ///   owners: the owners are one step, but a failure between those calls keeps the
    ///   communities. A store that can do both in one transaction should override it,
    ///   as the in-memory and SQLite ones do; a wrapper should forward it.
    async fn begin_import<'a>(&'a self, now: Timestamp) -> RepoResult<Box<dyn ImportSession + 'a>> {
        Ok(Box::new(BufferedImport {
            repo: self,
            now,
            communities: Vec::new(),
            owners: Vec::new(),
        }))
    }
}

/// An import in progress ([`OwnerDirectory::begin_import`]): nothing of it is visible
/// until [`commit`](Self::commit); dropping it keeps nothing.
#[async_trait]
pub trait ImportSession: Send {
    /// Inserts or replaces communities, as
    /// [`OwnerDirectory::upsert_community`] does for each.
    async fn upsert_communities(&mut self, communities: &[Community]) -> RepoResult<()>;

    /// Inserts or updates owners, as [`OwnerDirectory::upsert_owners`] does (merged
    /// from host data, live and pending tokens revoked when the primary email
    /// changes), with the
    /// session's `now`.
    async fn upsert_owners(&mut self, owners: &[Owner]) -> RepoResult<()>;

    /// Makes everything written through the session visible, in one step.
    async fn commit(self: Box<Self>) -> RepoResult<()>;
}

/// The default import session: keeps every chunk until `commit`, then writes through
/// the directory's own calls (see [`OwnerDirectory::begin_import`]).
struct BufferedImport<'a, R: ?Sized> {
    repo: &'a R,
    now: Timestamp,
    communities: Vec<Community>,
    owners: Vec<Owner>,
}

#[async_trait]
impl<R: OwnerDirectory + ?Sized> ImportSession for BufferedImport<'_, R> {
    async fn upsert_communities(&mut self, communities: &[Community]) -> RepoResult<()> {
        self.communities.extend_from_slice(communities);
        Ok(())
    }

    async fn upsert_owners(&mut self, owners: &[Owner]) -> RepoResult<()> {
        self.owners.extend_from_slice(owners);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> RepoResult<()> {
        for community in &self.communities {
            self.repo.upsert_community(community).await?;
        }
        self.repo.upsert_owners(&self.owners, self.now).await
    }
}
