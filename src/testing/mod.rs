//! Conformance suites any adapter can run against itself (feature `testing`).
//!
//! **Not semver-stable**: checks are added and tightened in minor releases, as the
//! contracts they check are clarified.
//!
//! Each check is a plain async function taking the adapter as a trait object and
//! returning a [`Failure`] naming the check and what went wrong. Repository checks
//! expect an empty repository and use fixed timestamps, never the system clock.
//! [`repository_conformance`] runs all of them, each on a fresh repository;
//! [`directory_conformance`] runs the directory checks against a host's own
//! [`OwnerRepository`], filled by the caller's seeding callback in its own schema; and
//! [`transport_conformance`] runs the transport checks against a transport and a
//! [`Sink`] that reads what arrived.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use owner_access::testing::{repository_conformance, transport_conformance};
//! use owner_access::{InMemoryRepository, InMemoryTransport};
//!
//! repository_conformance(|| async { InMemoryRepository::new() }).await.unwrap();
//! let transport = InMemoryTransport::new();
//! transport_conformance(&transport, &transport).await.unwrap();
//! # });
//! ```
//!
//! Concurrency checks interleave calls on one task (`join!`, `join_all`), so an adapter
//! that is not compare-and-set shows it wherever it awaits between its read and its
//! write, as any adapter over a database or a file does.
//!
//! Each area's checks sit in a file of their own; the suites' tables below are the
//! one list of checks, in the order they run: adding a check is a line there.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::repository::{OwnerDirectory, OwnerRepository, OwnerStorage, RepoResult};
use crate::transport::MailTransport;

mod activity;
mod batches;
mod claims;
mod deliveries;
mod directory;
mod drafts;
mod fixtures;
mod harness;
mod mass_edit;
mod owners;
mod rate;
mod registrations;
mod tokens;
mod transport;

pub use activity::*;
pub use batches::*;
pub use claims::*;
pub use deliveries::*;
pub use directory::*;
pub use drafts::*;
pub use harness::{CheckResult, Failure};
pub use mass_edit::*;
pub use owners::*;
pub use rate::*;
pub use registrations::*;
pub use tokens::*;
pub use transport::*;

use fixtures::t;
use harness::Ctx;

/// A repository check, its future boxed so that one table holds every check.
type RepositoryCheck = for<'a> fn(&'a dyn OwnerStorage) -> BoxFuture<'a, CheckResult>;
/// A directory check and the seed its directory must hold.
type DirectoryCheck = (
    fn() -> Seed,
    for<'a> fn(&'a dyn OwnerRepository) -> BoxFuture<'a, CheckResult>,
);
/// A transport check.
type TransportCheck = for<'a> fn(&'a dyn MailTransport, &'a dyn Sink) -> BoxFuture<'a, CheckResult>;

/// Declares a suite from one list of its checks: the public constant of their names
/// and the private table the suite's runner walks, in the same order.
macro_rules! suite {
    ($(#[$doc:meta])* $names:ident, $table:ident: repository [$($check:ident),* $(,)?]) => {
        $(#[$doc])*
        pub const $names: &[&str] = &[$(stringify!($check)),*];
        const $table: &[(&str, RepositoryCheck)] =
            &[$((stringify!($check), |repo| Box::pin($check(repo)))),*];
    };
    ($(#[$doc:meta])* $names:ident, $table:ident: directory [$(($seed:ident, $check:ident)),* $(,)?]) => {
        $(#[$doc])*
        pub const $names: &[&str] = &[$(stringify!($check)),*];
        const $table: &[(&str, DirectoryCheck)] =
            &[$((stringify!($check), ($seed, |dir| Box::pin($check(dir))))),*];
    };
    ($(#[$doc:meta])* $names:ident, $table:ident: transport [$($check:ident),* $(,)?]) => {
        $(#[$doc])*
        pub const $names: &[&str] = &[$(stringify!($check)),*];
        const $table: &[(&str, TransportCheck)] =
            &[$((stringify!($check), |transport, sink| Box::pin($check(transport, sink)))),*];
    };
}

suite! {
    /// The names of every repository check, in the order [`repository_conformance`]
    /// runs them (the [directory checks](DIRECTORY_CHECKS) follow).
    REPOSITORY_CHECKS, REPOSITORY_SUITE: repository [
        communities_round_trip,
        owners_round_trip,
        upsert_merge_rules,
        upsert_email_change_revokes_tokens,
        upsert_is_all_or_nothing,
        import_session_is_one_step,
        community_owners_filters,
        email_holders_rules,
        update_emails_applies_and_revokes,
        update_emails_not_found_changes_nothing,
        update_emails_uniqueness,
        drafts_round_trip,
        create_batch_stores_everything,
        create_batch_is_all_or_nothing,
        create_batch_duplicate_id,
        claim_deliveries_rules,
        claim_deliveries_concurrently,
        renew_claims_rules,
        stale_holder_writes_are_refused,
        held_claims_and_revoke,
        renewal_races_take_over,
        record_delivery_rules,
        release_deliveries_rules,
        unreachable_runs_are_counted,
        send_slots_rules,
        send_slots_concurrently,
        issue_token_rules,
        issue_tokens_in_a_group,
        tokens_pending_until_sent,
        record_deliveries_in_a_group,
        invitation_states_follow_sent_messages,
        skipped_deliveries_are_settled,
        redeem_token_rules,
        redeem_token_concurrently_once,
        revoke_tokens_rules,
        owed_registrations_rules,
        redeem_answered_once,
        activity_feed_order_and_paging,
    ]
}

suite! {
    /// The names of every directory check, in the order [`directory_conformance`]
    /// runs them.
    DIRECTORY_CHECKS, DIRECTORY_SUITE: directory [
        (seed_directory_reads, directory_reads),
        (seed_directory_email_holders, directory_email_holders),
        (seed_directory_update_emails, directory_update_emails),
        (seed_directory_mark_registered, directory_mark_registered),
    ]
}

suite! {
    /// The names of every transport check, in the order [`transport_conformance`]
    /// runs them.
    TRANSPORT_CHECKS, TRANSPORT_SUITE: transport [
        transport_delivers_once,
        transport_preserves_bytes,
        transport_concurrent_sends,
        transport_large_message,
        transport_send_after_close,
    ]
}

/// What a suite returns: every failure, or none.
fn outcome(failures: Vec<Failure>) -> Result<(), Vec<Failure>> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// Something that lends both storage ports ([`OwnerStorage`]): any implementation, or one boxed or
/// shared as a trait object, so the suite runs the same through each.
pub trait AsRepository: Send + Sync {
    /// The repository.
    fn as_repository(&self) -> &dyn OwnerStorage;
}

impl<T: OwnerStorage> AsRepository for T {
    fn as_repository(&self) -> &dyn OwnerStorage {
        self
    }
}

impl AsRepository for Box<dyn OwnerStorage> {
    fn as_repository(&self) -> &dyn OwnerStorage {
        &**self
    }
}

impl AsRepository for Arc<dyn OwnerStorage> {
    fn as_repository(&self) -> &dyn OwnerStorage {
        &**self
    }
}

/// Runs every repository check, each against a fresh repository from `make`, then
/// the [directory checks](DIRECTORY_CHECKS) on fresh ones seeded through their own
/// upserts, and returns every failure.
pub async fn repository_conformance<F, Fut, R>(make: F) -> Result<(), Vec<Failure>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = R>,
    R: AsRepository,
{
    let mut failures = Vec::new();
    for (_, check) in REPOSITORY_SUITE {
        let repo = make().await;
        failures.extend(check(repo.as_repository()).await.err());
    }
    // The directory checks, over the repository's own directory seeded through its
    // upserts.
    for &(name, (seed, check)) in DIRECTORY_SUITE {
        let repo = make().await;
        let result = match seed_through_upserts(repo.as_repository(), &seed()).await {
            Ok(()) => check(repo.as_repository()).await,
            Err(e) => Err(Ctx(name).fail(format!("seeding: {e}"))),
        };
        failures.extend(result.err());
    }
    outcome(failures)
}

/// Runs every directory check, each against a fresh directory that `make` builds
/// holding the check's [`Seed`] (written in the host's own schema), and returns every
/// failure. What a host runs against its own `OwnerRepository`.
pub async fn directory_conformance<F, Fut, D>(make: F) -> Result<(), Vec<Failure>>
where
    F: Fn(Seed) -> Fut,
    Fut: Future<Output = D>,
    D: AsDirectory,
{
    let mut failures = Vec::new();
    for (_, (seed, check)) in DIRECTORY_SUITE {
        let dir = make(seed()).await;
        failures.extend(check(dir.as_directory()).await.err());
    }
    outcome(failures)
}

/// Seeds one of the crate's own directories through [`OwnerDirectory`]: how
/// [`repository_conformance`] runs the directory checks too.
pub async fn seed_through_upserts<D: OwnerDirectory + ?Sized>(
    dir: &D,
    seed: &Seed,
) -> RepoResult<()> {
    for community in &seed.communities {
        dir.upsert_community(community).await?;
    }
    dir.upsert_owners(&seed.owners, t(-1000)).await
}

/// Runs every transport check against `transport`, reading what arrived from `sink`
/// (for [`InMemoryTransport`](crate::InMemoryTransport), the transport itself), and
/// returns every failure. Needs a tokio runtime with timers (the suite waits for mail
/// to arrive).
pub async fn transport_conformance(
    transport: &dyn MailTransport,
    sink: &dyn Sink,
) -> Result<(), Vec<Failure>> {
    let mut failures = Vec::new();
    for (_, check) in TRANSPORT_SUITE {
        failures.extend(check(transport, sink).await.err());
    }
    outcome(failures)
}
