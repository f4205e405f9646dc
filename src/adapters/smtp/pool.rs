//! The connection pool of an [`SmtpTransport`]: a fixed set of slots shared by the
//! send engine's workers, and the rules of reusing a connection across messages.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::{Semaphore, SemaphorePermit};

use super::SmtpTransport;
use super::connection::Connection;
use super::error;
use super::transaction::Stage;
use crate::transport::{Envelope, TransportError};
use smtp_proto::Response;

/// The fixed set of connection slots. A slot is `None` until a message needs it
/// and after its connection was closed.
pub(super) struct Pool {
    permits: Semaphore,
    size: usize,
    idle: Mutex<Vec<Option<Connection>>>,
}

impl Pool {
    pub(super) fn new(size: usize) -> Self {
        Self {
            permits: Semaphore::new(size),
            size,
            idle: Mutex::new((0..size).map(|_| None).collect()),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Option<Connection>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a free slot, preferring one with an open connection.
    pub(super) async fn checkout(&self) -> Result<Checkout<'_>, TransportError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| TransportError::fatal("the SMTP connection pool is closed"))?;
        let conn = self.idle().pop().flatten();
        Ok(Checkout {
            pool: self,
            conn,
            _permit: permit,
        })
    }

    /// Waits for every slot (the messages in flight end first), then sends QUIT on
    /// every open connection and closes it.
    pub(super) async fn close_all(&self) -> Result<(), TransportError> {
        let all = u32::try_from(self.size).unwrap_or(u32::MAX);
        let _permits = self
            .permits
            .acquire_many(all)
            .await
            .map_err(|_| TransportError::fatal("the SMTP connection pool is closed"))?;
        let open: Vec<Connection> = self.idle().iter_mut().filter_map(Option::take).collect();
        futures::future::join_all(open.into_iter().map(Connection::quit)).await;
        Ok(())
    }
}

/// A slot taken from the pool; goes back when dropped, also when the send is
/// cancelled (a connection in the middle of a transaction is dropped, not
/// returned: it is moved out of the checkout while in use).
pub(super) struct Checkout<'a> {
    pool: &'a Pool,
    conn: Option<Connection>,
    _permit: SemaphorePermit<'a>,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        let conn = self.conn.take();
        let mut idle = self.pool.idle();
        if conn.is_some() {
            idle.push(conn);
        } else {
            idle.insert(0, None);
        }
    }
}

impl SmtpTransport {
    /// Runs one transaction on the checked-out slot's connection (opening one if the
    /// slot has none), replacing a connection found dead before anything of the
    /// message was sent once. Afterwards the connection goes back to the slot, unless
    /// it is dead, its RSET failed, or it reached `messages_per_connection` (then it
    /// is closed with QUIT).
    pub(super) async fn deliver(
        &self,
        checkout: &mut Checkout<'_>,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Response<String>, TransportError> {
        let from = envelope.from.smtp_form();
        let to = envelope.to.smtp_form();
        let mut reused = checkout.conn.is_some();
        loop {
            let mut conn = match checkout.conn.take() {
                Some(conn) => conn,
                None => self.open().await?,
            };
            match conn.transact(from, to, message).await {
                Ok(reply) => {
                    conn.sent += 1;
                    if conn.sent >= self.settings.messages_per_connection {
                        conn.quit().await;
                    } else {
                        checkout.conn = Some(conn);
                    }
                    return Ok(reply);
                }
                Err(failure) => {
                    let dead = failure.kills_connection();
                    if dead && reused && failure.stage == Stage::Mail && !failure.is_timeout() {
                        // The pooled connection had gone away while idle.
                        reused = false;
                        continue;
                    }
                    let error = error::in_transaction(self, failure, to);
                    if !dead && conn.reset().await {
                        checkout.conn = Some(conn);
                    }
                    return Err(error);
                }
            }
        }
    }
}
