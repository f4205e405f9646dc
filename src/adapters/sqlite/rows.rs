//! One call's view of a connection ([`Db`], which counts statements), stored values
//! (timestamps, addresses, JSON list parameters) and the mappers between rows and the
//! domain's types.

use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, Params, Row};

use super::fail::{Fail, Message, Res, bad_row};
use crate::adapters::sql_columns::{self, StateColumns};
use crate::domain::{
    Batch, BatchId, Branding, Community, CommunityId, Delivery, Draft, DraftId, EmailAddress,
    InvitationState, Mailbox, Owner, OwnerId, PropertyId, Registered, TimeZoneName, Timestamp,
    TokenHash, TokenRecord,
};
use crate::invite::{Attachment, Invite};
use crate::repository::RepositoryError;
use crate::selection::Selection;

/// One call's view of a connection inside its transaction; counts statements.
pub(super) struct Db<'a> {
    pub(super) conn: &'a Connection,
    pub(super) count: &'a AtomicU64,
}

impl Db<'_> {
    pub(super) fn exec<P: Params>(&self, sql: &str, params: P) -> Res<usize> {
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(self.conn.prepare_cached(sql)?.execute(params)?)
    }

    pub(super) fn rows<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnMut(&Row<'_>) -> Res<T>,
    ) -> Res<Vec<T>> {
        self.rows_at_most(sql, params, 0, f)
    }

    /// [`rows`](Self::rows) when there are at most `expected` of them: one allocation
    /// instead of a doubling vector (which holds up to twice the rows at its peak).
    pub(super) fn rows_at_most<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        expected: usize,
        mut f: impl FnMut(&Row<'_>) -> Res<T>,
    ) -> Res<Vec<T>> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        let mut out = Vec::with_capacity(expected);
        while let Some(row) = rows.next()? {
            out.push(f(row)?);
        }
        Ok(out)
    }

    pub(super) fn row<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row<'_>) -> Res<T>,
    ) -> Res<Option<T>> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        match rows.next()? {
            Some(row) => f(row).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn exists<P: Params>(&self, sql: &str, params: P) -> Res<bool> {
        Ok(self.row(sql, params, |_| Ok(()))?.is_some())
    }

    pub(super) fn last_insert_rowid(&self) -> i64 {
        self.conn.last_insert_rowid()
    }
}

/// A timestamp as stored: nanoseconds since the epoch.
pub(super) fn ts(t: Timestamp) -> Res<i64> {
    i64::try_from(t.as_offset_date_time().unix_timestamp_nanos()).map_err(|_| {
        Fail::Repo(RepositoryError::Backend {
            store: "SQLite repository".into(),
            source: Box::new(Message(format!(
                "{t} is outside the range the SQLite repository stores (years 1678 to 2261)"
            ))),
        })
    })
}

pub(super) fn read_ts(n: i64) -> Res<Timestamp> {
    sql_columns::timestamp(n).map_err(bad_column)
}

/// A column [`sql_columns`] found wrong, as this adapter's [`bad_row`].
fn bad_column((what, detail): sql_columns::BadColumn) -> Fail {
    bad_row(what, detail)
}

pub(super) fn read_opt_ts(n: Option<i64>) -> Res<Option<Timestamp>> {
    n.map(read_ts).transpose()
}

macro_rules! read_id {
    ($ty:ty, $raw:expr, $what:expr) => {
        <$ty>::new(&$raw).map_err(|e| bad_row($what, e))
    };
}
pub(super) use read_id;

pub(super) fn read_address(raw: &str, what: &str) -> Res<EmailAddress> {
    EmailAddress::parse(raw).map_err(|e| bad_row(what, e))
}

/// A list as one JSON array parameter, for `json_each`: one statement, any length.
pub(super) fn json_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    json_array(items)
}

/// How many rows of a large write (a batch's deliveries, an invite's selection) go
/// into one statement: few enough that its JSON is a few hundred KB, many enough that
/// statement overhead does not count.
pub(super) const WRITE_CHUNK: usize = 10_000;

/// A JSON array of `[a, b]` pairs, read in SQL as `value ->> 0` and `value ->> 1`.
pub(super) fn json_pairs<'a>(items: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    json_array(items.into_iter().map(|(a, b)| [a, b]))
}

/// Serialises straight from the iterator: no intermediate values or copies.
pub(super) fn json_array<T: serde::Serialize>(items: impl IntoIterator<Item = T>) -> String {
    use serde::Serializer as _;
    let mut out = Vec::new();
    serde_json::Serializer::new(&mut out)
        .collect_seq(items)
        .expect("serialising strings to memory cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

pub(super) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// [`read_owner`]'s columns: the registered flag and its time are columns 7 and 8.
pub(super) const OWNER_COLUMNS: &str = "id, community, property, first_name, last_name, property_address, \
                             primary_email, registered, registered_at";

pub(super) fn read_owner(row: &Row<'_>) -> Res<Owner> {
    let registered = match row.get::<_, i64>(7)? {
        0 => None,
        1 => Some(Registered {
            at: read_opt_ts(row.get(8)?)?,
        }),
        other => return Err(bad_row("owners.registered", other)),
    };
    Ok(Owner {
        id: read_id!(OwnerId, row.get::<_, String>(0)?, "owners.id")?,
        community: read_id!(CommunityId, row.get::<_, String>(1)?, "owners.community")?,
        property: read_id!(PropertyId, row.get::<_, String>(2)?, "owners.property")?,
        first_name: row.get(3)?,
        last_name: row.get(4)?,
        property_address: row.get(5)?,
        primary_email: row.get(6)?,
        registered,
    })
}

/// The registered columns of an owner: (flag, time).
pub(super) fn registered_columns(registered: Option<&Registered>) -> Res<(bool, Option<i64>)> {
    Ok(match registered {
        None => (false, None),
        Some(Registered { at }) => (true, at.map(ts).transpose()?),
    })
}

/// [`read_community`]'s columns.
pub(super) const COMMUNITY_COLUMNS: &str = "id, name, reply_to, time_zone, logo_url, accent_color";

pub(super) fn read_community(r: &Row<'_>) -> Res<Community> {
    let mut branding = Branding::default();
    if let Some(url) = r.get::<_, Option<String>>(4)? {
        branding = branding
            .with_logo_url(&url)
            .map_err(|e| bad_row("communities.logo_url", e))?;
    }
    if let Some(color) = r.get::<_, Option<String>>(5)? {
        branding = branding
            .with_accent_color(&color)
            .map_err(|e| bad_row("communities.accent_color", e))?;
    }
    Ok(Community {
        id: read_id!(CommunityId, r.get::<_, String>(0)?, "communities.id")?,
        name: r.get(1)?,
        reply_to: r
            .get::<_, Option<String>>(2)?
            .map(|a| read_address(&a, "communities.reply_to"))
            .transpose()?,
        time_zone: r
            .get::<_, Option<String>>(3)?
            .map(|z| TimeZoneName::new(&z).map_err(|e| bad_row("communities.time_zone", e)))
            .transpose()?,
        branding,
    })
}

pub(super) fn read_invite(db: &Db<'_>, id: i64) -> Res<Invite> {
    let head = db
        .row(
            "SELECT community, subject, text_body, html_body, reply_to, summary_to, draft,
                    sender, portal_url, text_from_html
             FROM owner_access_invites WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    (
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ),
                    (
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ),
                    (
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, Option<String>>(8)?,
                        r.get::<_, bool>(9)?,
                    ),
                ))
            },
        )?
        .ok_or_else(|| bad_row("invite reference", id))?;
    let selection = db.rows(
        "SELECT owner FROM owner_access_invite_selection WHERE invite = ?1 ORDER BY owner",
        [id],
        |r| read_id!(OwnerId, r.get::<_, String>(0)?, "invite_selection.owner"),
    )?;
    let attachments = db.rows(
        "SELECT file_name, content_type, bytes FROM owner_access_invite_attachments
         WHERE invite = ?1 ORDER BY position",
        [id],
        |r| {
            Ok(Attachment {
                file_name: r.get(0)?,
                content_type: r.get(1)?,
                bytes: r.get(2)?,
            })
        },
    )?;
    let (
        (community, subject, text_body, html_body),
        (reply_to, summary_to, draft),
        (from, portal_url, text_from_html),
    ) = head;
    Ok(Invite {
        community: read_id!(CommunityId, community, "invites.community")?,
        selection: Selection::of(selection),
        subject,
        text_body: (!text_from_html).then_some(text_body),
        html_body,
        reply_to,
        summary_to,
        attachments,
        draft: draft
            .map(|d| read_id!(DraftId, d, "invites.draft"))
            .transpose()?,
        from,
        portal_url,
    })
}

pub(super) fn read_draft(db: &Db<'_>, row: (String, i64, i64, i64)) -> Res<Draft> {
    let (id, invite, created_at, updated_at) = row;
    Ok(Draft {
        id: read_id!(DraftId, id, "drafts.id")?,
        invite: read_invite(db, invite)?,
        created_at: read_ts(created_at)?,
        updated_at: read_ts(updated_at)?,
    })
}

pub(super) const BATCH_COLUMNS: &str = "id, community, invite, sender_name, sender_address, portal_url, \
     token_ttl_seconds, created_at, resend";

pub(super) type BatchRow = (
    String,
    String,
    i64,
    Option<String>,
    String,
    String,
    i64,
    i64,
    bool,
);

pub(super) fn batch_row(r: &Row<'_>) -> Res<BatchRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

pub(super) fn read_batch(db: &Db<'_>, row: BatchRow) -> Res<Batch> {
    let (id, community, invite, sender_name, sender_address, portal_url, ttl, created_at, resend) =
        row;
    Ok(Batch {
        id: read_id!(BatchId, id, "batches.id")?,
        community: read_id!(CommunityId, community, "batches.community")?,
        invite: read_invite(db, invite)?,
        sender: Mailbox {
            name: sender_name,
            address: read_address(&sender_address, "batches.sender_address")?,
        },
        portal_url,
        token_ttl_seconds: u64::try_from(ttl)
            .map_err(|e| bad_row("batches.token_ttl_seconds", e))?,
        created_at: read_ts(created_at)?,
        resend,
    })
}

macro_rules! delivery_columns {
    () => {
        "owner, to_addr, state, state_at, error, attempts, holder, lease_until, unreachable_runs, skip_reason"
    };
}
pub(super) use delivery_columns;

pub(super) const DELIVERY_COLUMNS: &str = delivery_columns!();

pub(super) fn read_delivery(batch: &BatchId, r: &Row<'_>) -> Res<Delivery> {
    let state = sql_columns::delivery_state(StateColumns {
        state: r.get(2)?,
        at: r.get(3)?,
        holder: r.get(6)?,
        until: r.get(7)?,
        error: r.get(4)?,
        skip_reason: r.get(9)?,
    })
    .map_err(bad_column)?;
    Ok(Delivery {
        batch: batch.clone(),
        owner: read_id!(OwnerId, r.get::<_, String>(0)?, "deliveries.owner")?,
        to: read_address(&r.get::<_, String>(1)?, "deliveries.to_addr")?,
        state,
        attempts: u32::try_from(r.get::<_, i64>(5)?)
            .map_err(|e| bad_row("deliveries.attempts", e))?,
        unreachable_runs: u32::try_from(r.get::<_, i64>(8)?)
            .map_err(|e| bad_row("deliveries.unreachable_runs", e))?,
    })
}

pub(super) fn read_token(db: &Db<'_>, hash: &TokenHash) -> Res<Option<TokenRecord>> {
    db.row(
        "SELECT i.owner, i.batch, t.issued_at, t.expires_at, t.state, t.state_at,
                coalesce(t.sent_to, (SELECT d.to_addr FROM owner_access_deliveries d
                                     WHERE d.batch = i.batch AND d.owner = i.owner), '')
         FROM owner_access_tokens t JOIN owner_access_invitations i ON i.id = t.invitation WHERE t.hash = ?1",
        [&hash.0[..]],
        |r| {
            let state = sql_columns::token_state(&r.get::<_, String>(4)?, r.get(5)?)
                .map_err(bad_column)?;
            Ok(TokenRecord {
                hash: *hash,
                owner: read_id!(OwnerId, r.get::<_, String>(0)?, "invitations.owner")?,
                batch: read_id!(BatchId, r.get::<_, String>(1)?, "invitations.batch")?,
                issued_at: read_ts(r.get(2)?)?,
                expires_at: read_ts(r.get(3)?)?,
                sent_to: r.get(6)?,
                state,
            })
        },
    )
}

/// One row of `invitation_states`: (owner, first, last, count, expires).
pub(super) fn read_invitation_state(row: &Row<'_>) -> Res<(OwnerId, InvitationState)> {
    Ok((
        read_id!(OwnerId, row.get::<_, String>(0)?, "invitation_states.owner")?,
        InvitationState {
            first_at: read_ts(row.get(1)?)?,
            last_at: read_ts(row.get(2)?)?,
            count: u32::try_from(row.get::<_, i64>(3)?)
                .map_err(|e| bad_row("invitation_states.count", e))?,
            expires_at: read_ts(row.get(4)?)?,
        },
    ))
}
