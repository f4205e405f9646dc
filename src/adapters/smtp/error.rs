//! Failures of an SMTP connection or transaction classified into the crate's
//! [`TransportError`]s, by the table in the [module docs](super): which class, whether
//! it was the connection, and the reply's codes.

use smtp_proto::Response;

use super::SmtpTransport;
use super::transaction::{Failure, Stage, enhanced};
use crate::transport::{ErrorClass, TransportError};

/// Classifies a failure while opening a connection.
pub(super) fn in_setup(
    server: &SmtpTransport,
    during: &str,
    error: mail_send::Error,
) -> TransportError {
    use mail_send::Error as E;
    match error {
        E::Io(e) => {
            TransportError::connection(format!("{server}: during {during}: {e}")).with_source(e)
        }
        E::UnparseableReply => TransportError::connection(format!(
            "{server}: the connection closed or the reply was unreadable during {during}"
        )),
        E::Timeout => {
            TransportError::connection(format!("{server}: no reply in time during {during}"))
        }
        E::Tls(e) => TransportError::fatal(format!("{server}: TLS failure during {during}: {e}"))
            .with_source(*e),
        E::UnexpectedReply(reply) | E::AuthenticationFailed(reply) => {
            let what = if during == "AUTH" {
                "authentication refused"
            } else {
                "refused"
            };
            let mut error = reply_error(&reply, &format!("{what} ({during})"));
            if error.is_transient() {
                error.connection = true;
            } else {
                error.class = ErrorClass::Fatal;
            }
            error
        }
        E::UnsupportedAuthMechanism => TransportError::fatal(format!(
            "{server}: the server offers no AUTH mechanism this client supports (PLAIN, LOGIN)"
        )),
        E::MissingStartTls => TransportError::fatal(format!(
            "{server}: STARTTLS is required but the server does not offer it"
        )),
        E::InvalidTLSName => {
            TransportError::fatal(format!("{server}: the host is no valid TLS server name"))
        }
        other => TransportError::fatal(format!("{server}: during {during}: {other}")),
    }
}

/// Classifies a failed transaction for the message to `to`.
pub(super) fn in_transaction(server: &SmtpTransport, failure: Failure, to: &str) -> TransportError {
    use mail_send::Error as E;
    let stage = failure.stage.name();
    match failure.error {
        E::UnexpectedReply(reply) => {
            let mut error = reply_error(&reply, &format!("reply to {stage} for <{to}>"));
            if reply.code == 421 {
                error.connection = true;
            } else if failure.stage == Stage::Mail && !error.is_transient() {
                error.class = ErrorClass::Fatal;
            }
            error
        }
        E::Io(e) => TransportError::connection(format!(
            "{server}: connection lost during {stage} for <{to}>: {e}"
        ))
        .with_source(e),
        E::UnparseableReply => TransportError::connection(format!(
            "{server}: the connection closed (or the reply was unreadable) during {stage} for <{to}>"
        )),
        E::Timeout => TransportError::connection(format!(
            "{server}: no reply within {:?} to {stage} for <{to}>",
            server.settings.command_timeout
        )),
        E::Tls(e) => TransportError::connection(format!(
            "{server}: TLS failure during {stage} for <{to}>: {e}"
        ))
        .with_source(*e),
        other => TransportError::fatal(format!("{server}: during {stage} for <{to}>: {other}")),
    }
}

/// A reply as an error: 4xx transient, 5xx permanent (callers adjust).
fn reply_error(reply: &Response<String>, context: &str) -> TransportError {
    let code = if (400..600).contains(&reply.code) {
        reply.code
    } else {
        // An answer outside 4xx/5xx where a positive one was due: a protocol
        // error; the server is not to be trusted with this message.
        554
    };
    TransportError::from_reply(
        code,
        enhanced(reply),
        format!(
            "{} ({context}; the server said {})",
            reply.message, reply.code
        ),
    )
}
