//! The harness: what a check returns, and how it says what went wrong.

use std::fmt;

use crate::repository::{RepoResult, RepositoryError};

/// A conformance check that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The check's name (its function's name).
    pub check: &'static str,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.message)
    }
}

impl std::error::Error for Failure {}

/// What a check returns.
pub type CheckResult = Result<(), Failure>;

/// Builds failures for one check.
#[derive(Clone, Copy)]
pub(super) struct Ctx(pub(super) &'static str);

impl Ctx {
    pub(super) fn fail(self, message: impl Into<String>) -> Failure {
        Failure {
            check: self.0,
            message: message.into(),
        }
    }

    pub(super) fn ok<T>(self, result: RepoResult<T>, doing: &str) -> Result<T, Failure> {
        result.map_err(|e| self.fail(format!("{doing}: unexpected error: {e}")))
    }

    pub(super) fn ensure(self, condition: bool, message: impl FnOnce() -> String) -> CheckResult {
        if condition {
            Ok(())
        } else {
            Err(self.fail(message()))
        }
    }

    pub(super) fn eq<T: PartialEq + fmt::Debug>(self, got: T, want: T, what: &str) -> CheckResult {
        self.ensure(got == want, || {
            format!("{what}: got {got:?}, expected {want:?}")
        })
    }

    /// The call must fail with the kind `is_kind` accepts.
    pub(super) fn err<T: fmt::Debug>(
        self,
        result: RepoResult<T>,
        kind: &str,
        is_kind: impl Fn(&RepositoryError) -> bool,
        doing: &str,
    ) -> CheckResult {
        match result {
            Err(e) if is_kind(&e) => Ok(()),
            Err(e) => Err(self.fail(format!("{doing}: expected {kind}, got error {e}"))),
            Ok(v) => Err(self.fail(format!("{doing}: expected {kind}, got Ok({v:?})"))),
        }
    }
}

pub(super) fn is_not_found(e: &RepositoryError) -> bool {
    matches!(e, RepositoryError::NotFound { .. })
}
pub(super) fn is_already_exists(e: &RepositoryError) -> bool {
    matches!(e, RepositoryError::AlreadyExists { .. })
}
pub(super) fn is_precondition(e: &RepositoryError) -> bool {
    matches!(e, RepositoryError::Precondition { .. })
}
pub(super) fn is_not_holder(e: &RepositoryError) -> bool {
    matches!(e, RepositoryError::NotHolder { .. })
}
