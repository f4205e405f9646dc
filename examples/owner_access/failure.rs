//! How a command fails: one sentence on stderr and an exit status (1: bad input or
//! usage, nothing sent), from the library's errors and the input files' problems.

use owner_access::Error;
use owner_access::error::with_causes;

use crate::input::InputError;

/// A failure, as one sentence (what `main` prints after `error: `), with its exit
/// status.
pub struct Failure {
    pub message: String,
    pub status: u8,
}

impl Failure {
    /// Bad input or usage: exit 1, nothing sent.
    pub fn input(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            status: 1,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let message = match &e {
            Error::InvalidInvite { problems } => format!(
                "the invitation cannot be sent: {}",
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Error::MassEditRejected { problems } => {
                let rows: Vec<String> = problems.iter().map(mass_edit_row).collect();
                format!(
                    "the mass edit was rejected, nothing changed: {}",
                    rows.join("; ")
                )
            }
            other => with_causes(other),
        };
        Failure::input(message)
    }
}

impl From<InputError> for Failure {
    fn from(e: InputError) -> Self {
        Failure::input(e.0)
    }
}

fn mass_edit_row(p: &owner_access::error::MassEditProblem) -> String {
    use owner_access::error::MassEditProblem as P;
    match p {
        P::UnknownOwner { owner } => format!("owner `{owner}` is unknown"),
        P::InvalidEmail {
            owner,
            email,
            error,
        } => format!("owner `{owner}`: `{email}` is not valid ({error})"),
        P::SharedEmail { owner, email, with } => format!(
            "owner `{owner}`: `{email}` would be shared with {}",
            with.iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        P::DuplicateRow { owner } => format!("owner `{owner}` appears twice"),
        _ => format!("{p:?}"),
    }
}

/// An id given with `--what`, or bad input naming the flag and the value.
pub fn id<T: std::str::FromStr<Err = owner_access::domain::InvalidId>>(
    what: &str,
    raw: &str,
) -> Result<T, Failure> {
    raw.parse()
        .map_err(|e| Failure::input(format!("--{what} `{raw}`: {e}")))
}

/// One message for every token failure: no probing which tokens exist.
pub fn token_failure(e: Error) -> Failure {
    match e {
        Error::InvalidToken { .. } => Failure::input("this registration link is not valid"),
        other => other.into(),
    }
}
