//! The errors the workflow returns, and what each means to the caller.

use crate::domain::{InvalidEmail, InvalidMailbox, OwnerId, TokenRejection};
use crate::invite::Problem;
use crate::repository::RepositoryError;

/// Shorthand for workflow results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One rejected row of a mass edit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum MassEditProblem {
    /// No owner with this id (in this community).
    UnknownOwner {
        /// The id as given.
        owner: OwnerId,
    },
    /// The new address is not valid.
    InvalidEmail {
        /// The owner.
        owner: OwnerId,
        /// The address as given.
        email: String,
        /// Why.
        error: InvalidEmail,
    },
    /// The new address would be used by two owner records.
    SharedEmail {
        /// The owner.
        owner: OwnerId,
        /// The address as given.
        email: String,
        /// The other records that would use it.
        with: Vec<OwnerId>,
    },
    /// The owner appears twice in the edit.
    DuplicateRow {
        /// The owner.
        owner: OwnerId,
    },
}

/// A setting outside the range the workflow can work with: a rate, a concurrency, a
/// time-out, a limit. Returned by [`SendOptions::validate`](crate::SendOptions::validate)
/// and by [`OwnerAccessBuilder::build`](crate::OwnerAccessBuilder::build), before
/// anything is stored or sent; the fix is to change the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the setting `{setting}` cannot be {value}: it must be {expected}")]
#[non_exhaustive]
pub struct InvalidSetting {
    /// The setting, named as its field or builder method (`rate_per_second`,
    /// `retry.max_attempts`, `token_ttl`).
    pub setting: &'static str,
    /// The value given, as text.
    pub value: String,
    /// What the setting accepts.
    pub expected: String,
}

impl InvalidSetting {
    pub(crate) fn new(
        setting: &'static str,
        value: impl std::fmt::Debug,
        expected: impl Into<String>,
    ) -> Self {
        Self {
            setting,
            value: format!("{value:?}"),
            expected: expected.into(),
        }
    }
}

/// What went wrong in a workflow call. Every variant leaves stored data as it was
/// unless its documentation says otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The invite has problems; nothing was sent or stored. Fix the invite and
    /// review again.
    #[error("the invitation cannot be sent: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidInvite {
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// A mass edit was rejected as a whole; nothing changed. Every bad row is listed.
    #[error("the mass edit was rejected: {} bad row(s)", problems.len())]
    MassEditRejected {
        /// Each bad row.
        problems: Vec<MassEditProblem>,
    },
    /// A community, owner, draft or batch the call names does not exist.
    #[error("{what} `{id}` not found")]
    NotFound {
        /// What kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The owner cannot be sent an invitation (for `resend`); nothing was sent.
    #[error("owner `{owner}` cannot be invited: {reason}")]
    NotEligible {
        /// The owner.
        owner: OwnerId,
        /// Why.
        reason: crate::eligibility::Ineligible,
    },
    /// A registration token does not work. Show the owner one generic message (this
    /// variant's `Display` is the same for every reason, so nothing can be probed);
    /// `reason` is for logs.
    #[error("this registration link is not valid")]
    InvalidToken {
        /// The precise reason, for logs only.
        reason: TokenRejection,
    },
    /// A setting given to [`OwnerAccess`](crate::OwnerAccess)'s builder is invalid.
    #[error("invalid configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// A rate, concurrency, time-out or limit is out of range; nothing was stored or
    /// sent.
    #[error(transparent)]
    InvalidSetting(#[from] InvalidSetting),
    /// The sender mailbox is invalid.
    #[error("invalid sender: {0}")]
    Sender(#[from] InvalidMailbox),
    /// One of the two storage ports failed: `side` says which, the host's owner
    /// directory ([`OwnerRepository`](crate::repository::OwnerRepository)) or the
    /// workflow's invitation store
    /// ([`InvitationStore`](crate::repository::InvitationStore)), so an operator
    /// knows whose database to look at; `error`'s kind says whether the same call may
    /// succeed later ([`RepositoryError::Unavailable`]) and its
    /// [`source`](std::error::Error::source) chain names the backend's cause. What of
    /// the call was stored is in each method's `# Errors`: a call that crosses the
    /// two ports may have committed its first port's step before the second failed.
    #[error("{side} failed: {error}")]
    Repository {
        /// The port that failed.
        side: Side,
        /// Its error, with the backend's cause beneath.
        #[source]
        error: RepositoryError,
    },
}

impl Error {
    /// The owner directory's error: `.map_err(Error::directory)` on a call to the
    /// [`OwnerRepository`](crate::repository::OwnerRepository).
    pub fn directory(error: RepositoryError) -> Self {
        Error::Repository {
            side: Side::Directory,
            error,
        }
    }

    /// The invitation store's error: `.map_err(Error::store)` on a call to the
    /// [`InvitationStore`](crate::repository::InvitationStore).
    pub fn store(error: RepositoryError) -> Self {
        Error::Repository {
            side: Side::Store,
            error,
        }
    }
}

/// Which of the two storage ports a [`RepositoryError`] came from. The two may be
/// one value (the crate's in-memory and SQLite adapters implement both), or the
/// host's database and the crate's store: either way the side names the port the
/// workflow called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Side {
    /// The host's owners and communities: the
    /// [`OwnerRepository`](crate::repository::OwnerRepository).
    Directory,
    /// The workflow's own state (drafts, batches, deliveries, tokens, activity): the
    /// [`InvitationStore`](crate::repository::InvitationStore).
    Store,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Directory => "the owner directory",
            Side::Store => "the invitation store",
        })
    }
}

/// An error and its causes on one line, `error: cause: its cause`, leaving out a cause
/// whose text the line already holds: what a stop reason carries, so that it names the
/// cause ("database is locked") and not only the store, and what a host shows an
/// operator (`the invitation store failed: SQLite repository hoa.db is unavailable:
/// database is locked: …`).
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        next = cause.source();
    }
    line
}
