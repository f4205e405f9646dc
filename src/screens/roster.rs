//! The Manage screen's output: the owners as filtered, each with their eligibility and
//! invitation state, and the community's counts per tab. Made by
//! [`OwnerAccess::roster`](crate::OwnerAccess::roster) from the directory's owners and
//! the store's invitation states.

use serde::{Deserialize, Serialize};

use crate::domain::eligibility::Eligibility;
use crate::domain::selection::Selection;
use crate::domain::{AccessState, InvitationState, Owner};

/// One row of the Manage screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterRow {
    /// The owner record.
    pub owner: Owner,
    /// The access status at the time the roster was made.
    pub state: AccessState,
    /// The invitations the store has sent the owner (first, last, how many, when the
    /// latest link expires); `None` when never invited.
    pub invitation: Option<InvitationState>,
    /// Whether the owner can be invited, and if not, why.
    pub eligibility: Eligibility,
}

/// Counts per access status over the whole community (the tabs' numbers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RosterCounts {
    /// Never invited.
    pub not_invited: usize,
    /// Invited, link valid.
    pub invited: usize,
    /// Invited, link expired.
    pub expired: usize,
    /// Registered.
    pub registered: usize,
    /// Registered as a percentage of all owners (0 when there are none).
    pub percent_registered: f64,
}

impl RosterCounts {
    /// Counts a set of states.
    pub fn tally(states: impl IntoIterator<Item = AccessState>) -> Self {
        let mut counts = RosterCounts::default();
        for state in states {
            match state {
                AccessState::NotInvited => counts.not_invited += 1,
                AccessState::Invited => counts.invited += 1,
                AccessState::Expired => counts.expired += 1,
                AccessState::Registered => counts.registered += 1,
            }
        }
        let total = counts.total();
        if total > 0 {
            counts.percent_registered = counts.registered as f64 * 100.0 / total as f64;
        }
        counts
    }

    /// All owners counted.
    pub fn total(&self) -> usize {
        self.not_invited + self.invited + self.expired + self.registered
    }
}

/// The Manage screen: the filtered owners with their eligibility, and the community's
/// counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Roster {
    /// Rows passing the filter, ordered by last name, first name, then id.
    pub rows: Vec<RosterRow>,
    /// Counts over the whole community, whatever the filter.
    pub counts: RosterCounts,
}

impl Roster {
    /// The rows that can be invited.
    pub fn eligible(&self) -> impl Iterator<Item = &RosterRow> {
        self.rows.iter().filter(|r| r.eligibility.is_eligible())
    }
}

/// Selections made from a roster: the Manage screen's "Select All".
impl Selection {
    /// "Select All" of a roster as filtered: every row that is eligible. Rows that are
    /// not eligible cannot be ticked in the product, so they are left out here.
    pub fn all_eligible(roster: &Roster) -> Self {
        Self::of(
            roster
                .rows
                .iter()
                .filter(|row| row.eligibility.is_eligible())
                .map(|row| row.owner.id.clone()),
        )
    }

    /// Every row of the roster, eligible or not (the review then lists the excluded
    /// ones with their reasons).
    pub fn all_rows(roster: &Roster) -> Self {
        Self::of(roster.rows.iter().map(|row| row.owner.id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_percentage() {
        let c = RosterCounts::tally([
            AccessState::Registered,
            AccessState::NotInvited,
            AccessState::Expired,
            AccessState::Invited,
        ]);
        assert_eq!(
            (c.not_invited, c.invited, c.expired, c.registered),
            (1, 1, 1, 1)
        );
        assert!((c.percent_registered - 25.0).abs() < 1e-9);
    }
}
