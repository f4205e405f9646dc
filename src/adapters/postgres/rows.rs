//! Rows to domain values and back: times as nanoseconds, ids checked as they are
//! read (a row the crate would not have written is [`Corrupt`]).
//!
//! [`Corrupt`]: crate::repository::RepositoryError::Corrupt

use tokio_postgres::Row;

use crate::adapters::sql_columns::{self, StateColumns};
use crate::domain::{
    ActivityEntry, BatchId, Branding, Community, CommunityId, Delivery, EmailAddress,
    InvitationState, Owner, OwnerId, PropertyId, Registered, TimeZoneName, Timestamp, TokenHash,
    TokenRecord,
};
use crate::repository::RepositoryError;

use super::connection::{Fail, Message, Res, bad_row};

/// A time as stored: nanoseconds since the Unix epoch (years 1678 to 2261).
pub(super) fn ts(t: Timestamp) -> Res<i64> {
    i64::try_from(t.as_offset_date_time().unix_timestamp_nanos()).map_err(|_| {
        Fail::Repo(RepositoryError::Backend {
            store: "PostgreSQL store".into(),
            source: Box::new(Message(format!(
                "{t} is outside the range the PostgreSQL adapters store (years 1678 to 2261)"
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

/// A duration as nanoseconds, saturating (a lease of centuries is no lease at all).
pub(super) fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A count or limit as the server's BIGINT.
pub(super) fn big(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

macro_rules! read_id {
    ($ty:ty, $raw:expr, $what:expr) => {
        <$ty>::new(&$raw).map_err(|e| $crate::adapters::postgres::connection::bad_row($what, e))
    };
}
pub(super) use read_id;

pub(super) fn read_address(raw: &str, what: &str) -> Res<EmailAddress> {
    EmailAddress::parse(raw).map_err(|e| bad_row(what, e))
}

pub(super) fn read_u32(n: i64, what: &str) -> Res<u32> {
    u32::try_from(n).map_err(|e| bad_row(what, e))
}

// ----- Directory -----------------------------------------------------------------

/// [`read_owner`]'s columns.
pub(super) const OWNER_COLUMNS: &str = "id, community, property, first_name, last_name, \
     property_address, primary_email, registered, registered_at";

pub(super) fn read_owner(row: &Row) -> Res<Owner> {
    let registered = if row.try_get::<_, bool>(7)? {
        Some(Registered {
            at: read_opt_ts(row.try_get(8)?)?,
        })
    } else {
        None
    };
    Ok(Owner {
        id: read_id!(OwnerId, row.try_get::<_, String>(0)?, "owners.id")?,
        community: read_id!(
            CommunityId,
            row.try_get::<_, String>(1)?,
            "owners.community"
        )?,
        property: read_id!(PropertyId, row.try_get::<_, String>(2)?, "owners.property")?,
        first_name: row.try_get(3)?,
        last_name: row.try_get(4)?,
        property_address: row.try_get(5)?,
        primary_email: row.try_get(6)?,
        registered,
    })
}

/// [`read_community`]'s columns.
pub(super) const COMMUNITY_COLUMNS: &str = "id, name, reply_to, time_zone, logo_url, accent_color";

pub(super) fn read_community(r: &Row) -> Res<Community> {
    let mut branding = Branding::default();
    if let Some(url) = r.try_get::<_, Option<String>>(4)? {
        branding = branding
            .with_logo_url(&url)
            .map_err(|e| bad_row("communities.logo_url", e))?;
    }
    if let Some(color) = r.try_get::<_, Option<String>>(5)? {
        branding = branding
            .with_accent_color(&color)
            .map_err(|e| bad_row("communities.accent_color", e))?;
    }
    Ok(Community {
        id: read_id!(CommunityId, r.try_get::<_, String>(0)?, "communities.id")?,
        name: r.try_get(1)?,
        reply_to: r
            .try_get::<_, Option<String>>(2)?
            .map(|a| read_address(&a, "communities.reply_to"))
            .transpose()?,
        time_zone: r
            .try_get::<_, Option<String>>(3)?
            .map(|z| TimeZoneName::new(&z).map_err(|e| bad_row("communities.time_zone", e)))
            .transpose()?,
        branding,
    })
}

// ----- Store ---------------------------------------------------------------------

/// [`read_delivery`]'s columns.
macro_rules! delivery_columns {
    () => {
        "owner, to_addr, state, state_at, error, attempts, holder, lease_until, \
         unreachable_runs, skip_reason"
    };
}
pub(super) use delivery_columns;

pub(super) fn read_delivery(batch: &BatchId, r: &Row) -> Res<Delivery> {
    let state = sql_columns::delivery_state(StateColumns {
        state: r.try_get(2)?,
        at: r.try_get(3)?,
        holder: r.try_get(6)?,
        until: r.try_get(7)?,
        error: r.try_get(4)?,
        skip_reason: r.try_get(9)?,
    })
    .map_err(bad_column)?;
    Ok(Delivery {
        batch: batch.clone(),
        owner: read_id!(OwnerId, r.try_get::<_, String>(0)?, "deliveries.owner")?,
        to: read_address(&r.try_get::<_, String>(1)?, "deliveries.to_addr")?,
        state,
        attempts: read_u32(r.try_get(5)?, "deliveries.attempts")?,
        unreachable_runs: read_u32(r.try_get(8)?, "deliveries.unreachable_runs")?,
    })
}

/// [`read_token`]'s query: a token with its invitation's owner and batch.
pub(super) const TOKEN: &str =
    "SELECT i.owner, i.batch, t.issued_at, t.expires_at, t.state, t.state_at, t.sent_to
     FROM owner_access_tokens t JOIN owner_access_invitations i ON i.id = t.invitation
     WHERE t.hash = $1";

pub(super) fn read_token(hash: TokenHash, r: &Row) -> Res<TokenRecord> {
    let state =
        sql_columns::token_state(&r.try_get::<_, String>(4)?, r.try_get(5)?).map_err(bad_column)?;
    Ok(TokenRecord {
        hash,
        owner: read_id!(OwnerId, r.try_get::<_, String>(0)?, "invitations.owner")?,
        batch: read_id!(BatchId, r.try_get::<_, String>(1)?, "invitations.batch")?,
        issued_at: read_ts(r.try_get(2)?)?,
        expires_at: read_ts(r.try_get(3)?)?,
        sent_to: r.try_get(6)?,
        state,
    })
}

pub(super) fn read_hash(bytes: Vec<u8>, what: &str) -> Res<TokenHash> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| bad_row(what, "not 32 bytes"))?;
    Ok(TokenHash(bytes))
}

/// (owner, first_at, last_at, count, expires_at).
pub(super) fn read_invitation_state(row: &Row) -> Res<(OwnerId, InvitationState)> {
    Ok((
        read_id!(
            OwnerId,
            row.try_get::<_, String>(0)?,
            "invitation_states.owner"
        )?,
        InvitationState {
            first_at: read_ts(row.try_get(1)?)?,
            last_at: read_ts(row.try_get(2)?)?,
            count: read_u32(row.try_get(3)?, "invitation_states.count")?,
            expires_at: read_ts(row.try_get(4)?)?,
        },
    ))
}

/// An activity entry's (kind, details) columns: the serde form as JSON text.
pub(super) fn activity_columns(entry: &ActivityEntry) -> Res<(String, String)> {
    let details = serde_json::to_value(&entry.kind).map_err(|e| {
        Fail::Repo(RepositoryError::Backend {
            store: "PostgreSQL store".into(),
            source: Box::new(e),
        })
    })?;
    let kind = details
        .get("kind")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    Ok((kind, details.to_string()))
}

/// An activity row: (at, details).
pub(super) fn read_activity(community: &CommunityId, r: &Row) -> Res<ActivityEntry> {
    let details: String = r.try_get(1)?;
    Ok(ActivityEntry {
        community: community.clone(),
        at: read_ts(r.try_get(0)?)?,
        kind: serde_json::from_str(&details).map_err(|e| bad_row("activity.details", e))?,
    })
}
