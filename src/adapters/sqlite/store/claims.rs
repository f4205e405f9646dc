//! Claims and outcomes: the statements that claim a chunk of deliveries, renew and
//! release a sender's leases and list who holds claims, and the compare-and-set that
//! records one delivery's outcome, with the invitation count of the sent ones.

use std::collections::HashSet;

use super::super::fail::Res;
use super::super::rows::{Db, delivery_columns, json_array, ts};
use crate::domain::{BatchId, DeliveryOutcome, OwnerId, SenderId, Timestamp};

/// Claims a chunk in one statement: the chosen rows are run-out leases by their end,
/// then pending ones by owner (their `lease_until` is NULL, so ordering by it first
/// keeps the index's order and needs no sort); the `UPDATE`'s own condition is the
/// compare-and-set. RETURNING gives the rows in no particular order.
pub(in crate::adapters::sqlite) const CLAIM: &str = concat!(
    "UPDATE owner_access_deliveries SET state = 'claimed', state_at = ?3, holder = ?4, lease_until = ?5
     WHERE batch = ?1 AND owner IN (
         SELECT owner FROM (
             SELECT owner FROM owner_access_deliveries WHERE batch = ?1 AND state = 'claimed'
                AND lease_until <= ?3
              ORDER BY lease_until, owner LIMIT ?2)
         UNION ALL
         SELECT owner FROM (
             SELECT owner FROM owner_access_deliveries WHERE batch = ?1 AND state = 'pending'
              ORDER BY lease_until, owner LIMIT ?2)
         LIMIT ?2)
       AND (state = 'pending' OR (state = 'claimed' AND lease_until <= ?3))
     RETURNING ",
    delivery_columns!()
);

/// Renews a sender's leases on the listed deliveries in one statement.
pub(in crate::adapters::sqlite) const RENEW: &str =
    "UPDATE owner_access_deliveries SET lease_until = ?4
     WHERE batch = ?1 AND owner IN (SELECT value FROM json_each(?2))
       AND state = 'claimed' AND holder = ?3
     RETURNING owner";

/// Gives a sender's claims on the listed deliveries back, in one statement.
pub(in crate::adapters::sqlite) const RELEASE: &str =
    "UPDATE owner_access_deliveries SET state = 'pending', state_at = NULL, holder = NULL, lease_until = NULL
     WHERE batch = ?1 AND owner IN (SELECT value FROM json_each(?2))
       AND state = 'claimed' AND holder = ?3
     RETURNING owner";

/// Who holds claims on a batch. Without statistics SQLite would scan the whole batch
/// by its key (the index lacks `holder`); the claimed rows are few, so they are read
/// through the state index and looked up.
pub(in crate::adapters::sqlite) const HELD_CLAIMS: &str =
    "SELECT holder, count(*), min(lease_until), max(lease_until)
     FROM owner_access_deliveries INDEXED BY owner_access_deliveries_by_state
     WHERE batch = ?1 AND state = 'claimed' GROUP BY holder";

/// Records one outcome of a delivery of a batch known to exist, if `sender` holds its
/// claim: the compare-and-set from `claimed` by that holder. Returns whether it was
/// recorded. (A sent message's invitation state is written for the whole group, by
/// [`count_invitations`].)
pub(super) fn record_outcome(
    db: &Db<'_>,
    batch: &BatchId,
    sender: &SenderId,
    owner: &OwnerId,
    outcome: &DeliveryOutcome,
    now: Timestamp,
) -> Res<bool> {
    let at = ts(now)?;
    let (new_state, error, attempts, skip) = match outcome {
        DeliveryOutcome::Sent { attempts, .. } => ("sent", None, *attempts, None),
        DeliveryOutcome::Failed { error, attempts } => {
            ("failed", Some(error.as_str()), *attempts, None)
        }
        DeliveryOutcome::Unreachable { attempts } => {
            let moved = db.exec(
                "UPDATE owner_access_deliveries SET state = 'pending', state_at = NULL, holder = NULL,
                     lease_until = NULL, attempts = min(attempts + ?3, 4294967295),
                     unreachable_runs = min(unreachable_runs + 1, 4294967295)
                 WHERE batch = ?1 AND owner = ?2 AND state = 'claimed' AND holder = ?4",
                rusqlite::params![
                    batch.as_str(),
                    owner.as_str(),
                    i64::from(*attempts),
                    sender.as_str()
                ],
            )?;
            return Ok(moved == 1);
        }
        DeliveryOutcome::Skipped { reason } => ("skipped", None, 0, Some(reason.code())),
    };
    let moved = db.exec(
        "UPDATE owner_access_deliveries SET state = ?3, state_at = ?4, error = ?5,
             attempts = min(attempts + ?6, 4294967295), holder = NULL, lease_until = NULL,
             skip_reason = ?8
         WHERE batch = ?1 AND owner = ?2 AND state = 'claimed' AND holder = ?7",
        rusqlite::params![
            batch.as_str(),
            owner.as_str(),
            new_state,
            at,
            error,
            i64::from(attempts),
            sender.as_str(),
            skip
        ],
    )?;
    Ok(moved == 1)
}

/// One more invitation for each owner whose message was recorded as sent at `at`,
/// with its link's expiry: [`InvitationState::after`] for a whole group in one
/// statement (an owner appears once in a group: one delivery per batch and owner).
pub(super) fn count_invitations(db: &Db<'_>, sent: &[(&OwnerId, Timestamp)], at: i64) -> Res<()> {
    if sent.is_empty() {
        return Ok(());
    }
    let mut pairs = Vec::with_capacity(sent.len());
    for (owner, expires_at) in sent {
        pairs.push((owner.as_str(), ts(*expires_at)?));
    }
    db.exec(
        "INSERT INTO owner_access_invitation_states (owner, first_at, last_at, count, expires_at)
         SELECT value ->> 0, ?1, ?1, 1, value ->> 1 FROM json_each(?2) WHERE true
         ON CONFLICT (owner) DO UPDATE SET
             last_at = excluded.last_at, count = min(count + 1, 4294967295),
             expires_at = excluded.expires_at",
        rusqlite::params![at, json_array(pairs)],
    )?;
    Ok(())
}

/// The listed owners that a fenced write did not touch.
pub(super) fn refused(listed: Vec<OwnerId>, done: &[String]) -> Vec<OwnerId> {
    if done.len() == listed.len() {
        return Vec::new();
    }
    let done: HashSet<&str> = done.iter().map(String::as_str).collect();
    listed
        .into_iter()
        .filter(|o| !done.contains(o.as_str()))
        .collect()
}
