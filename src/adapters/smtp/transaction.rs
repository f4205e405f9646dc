//! One message's SMTP transaction on an open connection: MAIL FROM, RCPT TO and
//! DATA (pipelined when the server offers PIPELINING), the message framed for DATA,
//! and the reply to its final dot; a failure says at which stage it happened and
//! whether the connection can still be used.

use mail_send::SmtpClient;
use smtp_proto::{EXT_8BIT_MIME, EXT_PIPELINING, EhloResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// The step of a transaction a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Mail,
    Rcpt,
    Data,
    EndOfData,
}

impl Stage {
    /// The step, for people (`MAIL FROM`, `the end of DATA`).
    pub(super) fn name(self) -> &'static str {
        match self {
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::EndOfData => "the end of DATA",
        }
    }
}

/// A transaction that did not end with the message accepted.
pub(super) struct Failure {
    pub(super) stage: Stage,
    pub(super) error: mail_send::Error,
    /// The server's state is not what ours is: do not reuse the connection.
    desync: bool,
}

impl Failure {
    /// Whether the connection cannot be used again: it dropped, timed out, or the
    /// server said 421 (closing).
    pub(super) fn kills_connection(&self) -> bool {
        if self.desync {
            return true;
        }
        match &self.error {
            mail_send::Error::UnexpectedReply(reply) => reply.code == 421,
            _ => true,
        }
    }

    pub(super) fn is_timeout(&self) -> bool {
        matches!(self.error, mail_send::Error::Timeout)
    }
}

/// One transaction: MAIL FROM, RCPT TO and DATA (in one write when the server
/// offers PIPELINING, RFC 2920, else each waiting for its reply), then the message
/// and the reply to its final dot.
pub(super) async fn transact<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    caps: &EhloResponse<String>,
    from: &str,
    to: &str,
    message: &[u8],
) -> Result<Response<String>, Failure> {
    let fail = |stage| {
        move |error| Failure {
            stage,
            error,
            desync: false,
        }
    };
    let body = if caps.has_capability(EXT_8BIT_MIME) && !message.is_ascii() {
        " BODY=8BITMIME"
    } else {
        ""
    };
    let mail = format!("MAIL FROM:<{from}>{body}\r\n");
    let rcpt = format!("RCPT TO:<{to}>\r\n");
    if caps.has_capability(EXT_PIPELINING) {
        // One write, one segment.
        let commands = [mail.as_bytes(), rcpt.as_bytes(), b"DATA\r\n"].concat();
        let limit = client.timeout;
        let mut replies = tokio::time::timeout(limit, async {
            client.stream.write_all(&commands).await?;
            client.stream.flush().await?;
            client.read_many(3).await
        })
        .await
        .map_err(|_| fail(Stage::Mail)(mail_send::Error::Timeout))?
        .map_err(fail(Stage::Mail))?
        .into_iter();
        let (Some(mail), Some(rcpt), Some(data)) = (replies.next(), replies.next(), replies.next())
        else {
            return Err(fail(Stage::Mail)(mail_send::Error::UnparseableReply));
        };
        let data_open = data.code == 354;
        for (reply, class, stage) in [(mail, 2, Stage::Mail), (rcpt, 2, Stage::Rcpt)] {
            if let Err(mut failure) = expect(reply, class, stage) {
                // A server that opened DATA after refusing the transaction is out
                // of step with us: the connection is not used again.
                failure.desync = data_open;
                return Err(failure);
            }
        }
        expect(data, 3, Stage::Data)?;
    } else {
        let reply = client.cmd(mail).await.map_err(fail(Stage::Mail))?;
        expect(reply, 2, Stage::Mail)?;
        let reply = client.cmd(rcpt).await.map_err(fail(Stage::Rcpt))?;
        expect(reply, 2, Stage::Rcpt)?;
        let reply = client.cmd(b"DATA\r\n").await.map_err(fail(Stage::Data))?;
        expect(reply, 3, Stage::Data)?;
    }
    let limit = client.timeout;
    let reply = tokio::time::timeout(limit, async {
        let end: &[u8] = if message.ends_with(b"\r\n") {
            b".\r\n"
        } else {
            b"\r\n.\r\n"
        };
        if needs_framing(message) {
            client.stream.write_all(&data_block(message)).await?;
        } else if message.len() <= SMALL_MESSAGE {
            // One segment for the message and its end: copying a few KB is cheaper
            // than a second write.
            client.stream.write_all(&[message, end].concat()).await?;
        } else {
            client.stream.write_all(message).await?;
            client.stream.write_all(end).await?;
        }
        client.stream.flush().await?;
        client.read().await
    })
    .await
    .map_err(|_| fail(Stage::EndOfData)(mail_send::Error::Timeout))?
    .map_err(fail(Stage::EndOfData))?;
    expect(reply, 2, Stage::EndOfData)
}

/// Messages up to this size go out in one write with their final dot.
const SMALL_MESSAGE: usize = 64 * 1024;

/// Whether the message must be rewritten for DATA: a bare CR or LF, or a line
/// starting with `.`. Messages from the MIME builder never need it, and are sent
/// as they are, uncopied.
fn needs_framing(message: &[u8]) -> bool {
    if message.first() == Some(&b'.') {
        return true;
    }
    let mut lfs = 0usize;
    for at in memchr::memchr_iter(b'\n', message) {
        if at == 0 || message[at - 1] != b'\r' || message.get(at + 1) == Some(&b'.') {
            return true;
        }
        lfs += 1;
    }
    memchr::memchr_iter(b'\r', message).count() != lfs
}

/// The message as DATA puts it on the wire, with the terminating `.` line: every
/// line break as CRLF (a bare CR or LF becomes CRLF, so no `<LF>.<LF>` can end the
/// data early anywhere), every line starting with `.` stuffed with one more, and a
/// final CRLF only when the message does not already end with one, so the server
/// stores exactly the bytes given. One buffer, so the data leaves in as few
/// segments as the socket allows.
fn data_block(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 512 + 8);
    let mut line_start = true;
    let mut i = 0;
    while i < message.len() {
        let b = message[i];
        match b {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += if b == b'\r' && message.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                line_start = true;
                continue;
            }
            b'.' if line_start => out.extend_from_slice(b".."),
            _ => out.push(b),
        }
        line_start = false;
        i += 1;
    }
    if !line_start || out.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn expect(reply: Response<String>, class: u16, stage: Stage) -> Result<Response<String>, Failure> {
    if reply.code / 100 == class {
        Ok(reply)
    } else {
        Err(Failure {
            stage,
            error: mail_send::Error::UnexpectedReply(reply),
            desync: false,
        })
    }
}

/// The enhanced status code of a reply (`2.0.0`), if it has one.
pub(super) fn enhanced(reply: &Response<String>) -> Option<String> {
    let [a, b, c] = reply.esc;
    (a != 0).then(|| format!("{a}.{b}.{c}"))
}

/// A reply on one line, with its codes: what [`Accepted`](crate::transport::Accepted)
/// reports (a queue id is in the text).
pub(super) fn reply_text(reply: &Response<String>) -> String {
    match enhanced(reply) {
        Some(esc) => format!("{} {esc} {}", reply.code, reply.message),
        None => format!("{} {}", reply.code, reply.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_block_stuffs_dots_and_ends_exactly_once() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"A: b\r\n\r\nbody\r\n", b"A: b\r\n\r\nbody\r\n.\r\n"),
            (b"A: b\r\n\r\nbody", b"A: b\r\n\r\nbody\r\n.\r\n"),
            (b".starts\r\n", b"..starts\r\n.\r\n"),
            (b"x\r\n.\r\n..\r\n", b"x\r\n..\r\n...\r\n.\r\n"),
            // Bare LF and CR become CRLF: no smuggled end of data.
            (
                b"x\n.\nMAIL FROM:<a@b>\n",
                b"x\r\n..\r\nMAIL FROM:<a@b>\r\n.\r\n",
            ),
            (b"x\r.\rMAIL", b"x\r\n..\r\nMAIL\r\n.\r\n"),
            (b"", b"\r\n.\r\n"),
            (b"a.b\r\n", b"a.b\r\n.\r\n"),
            (b"a\r\nb\rc\r\n", b"a\r\nb\r\nc\r\n.\r\n"),
            (b"a\r\n\nb\r\n", b"a\r\n\r\nb\r\n.\r\n"),
        ];
        assert!(!needs_framing(b"A: b\r\n\r\nbody.\r\n"));
        assert!(needs_framing(b"A: b\r\n\r\n.body\r\n"));
        assert!(needs_framing(b"A: b\r\n\nbody\r\n"));
        assert!(needs_framing(b"A: b\r\r\nbody\r\n"));
        for (message, wire) in cases {
            if !needs_framing(message) {
                let mut direct = message.to_vec();
                if !direct.ends_with(b"\r\n") {
                    direct.extend_from_slice(b"\r\n");
                }
                direct.extend_from_slice(b".\r\n");
                assert_eq!(direct, wire.to_vec(), "sent as is");
            }
            assert_eq!(
                String::from_utf8_lossy(&data_block(message)),
                String::from_utf8_lossy(wire)
            );
        }
    }
}
