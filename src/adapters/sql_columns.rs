//! What the SQL adapters (SQLite and PostgreSQL) store in the same columns, decoded
//! once: a time as nanoseconds since the Unix epoch, a delivery's state columns, a
//! token's state columns.
//!
//! Both schemas keep a state as a name plus the columns that name needs (a claim's
//! holder and lease, a failure's error, a skip's reason), so a row can hold a
//! combination the crate never writes (a `sent` row without a time, a `claimed` row
//! without a holder). Each decoder says which column is wrong as `(column, detail)`,
//! and each adapter maps that to its own `bad_row`, a
//! [`RepositoryError::Corrupt`](crate::repository::RepositoryError::Corrupt) naming
//! the column.

use time::OffsetDateTime;

use crate::domain::{DeliveryState, SenderId, SkipReason, Timestamp, TokenState};

/// A column that holds what the crate would not have written: its name and why.
pub(crate) type BadColumn = (&'static str, String);

/// A time as stored: nanoseconds since the Unix epoch.
pub(crate) fn timestamp(nanos: i64) -> Result<Timestamp, BadColumn> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .map(Timestamp::from_offset_date_time)
        .map_err(|e| ("timestamp", e.to_string()))
}

/// A delivery's state columns as read from its row, before any check.
pub(crate) struct StateColumns {
    /// `state`: `pending`, `claimed`, `sent`, `failed` or `skipped`.
    pub(crate) state: String,
    /// `state_at`: when it entered that state (none while pending).
    pub(crate) at: Option<i64>,
    /// `holder`: the sender holding a claim.
    pub(crate) holder: Option<String>,
    /// `lease_until`: when a claim's lease ends.
    pub(crate) until: Option<i64>,
    /// `error`: why a failed delivery failed.
    pub(crate) error: Option<String>,
    /// `skip_reason`: a skip's [`SkipReason`] code.
    pub(crate) skip_reason: Option<String>,
}

/// The [`DeliveryState`] a row's state columns hold, or the column that is wrong.
pub(crate) fn delivery_state(c: StateColumns) -> Result<DeliveryState, BadColumn> {
    let at = c.at.map(timestamp).transpose()?;
    Ok(match (c.state.as_str(), at) {
        ("pending", None) => DeliveryState::Pending,
        ("claimed", Some(at)) => {
            let holder = present(c.holder, "deliveries.holder")?;
            DeliveryState::Claimed {
                at,
                holder: SenderId::new(&holder).map_err(|e| ("deliveries.holder", e.to_string()))?,
                until: timestamp(present(c.until, "deliveries.lease_until")?)?,
            }
        }
        ("sent", Some(at)) => DeliveryState::Sent { at },
        ("failed", Some(at)) => DeliveryState::Failed {
            at,
            error: present(c.error, "deliveries.error")?,
        },
        ("skipped", Some(at)) => {
            let code = present(c.skip_reason, "deliveries.skip_reason")?;
            DeliveryState::Skipped {
                at,
                reason: SkipReason::from_code(&code).ok_or(("deliveries.skip_reason", code))?,
            }
        }
        (other, _) => return Err(("deliveries.state", other.to_owned())),
    })
}

/// The [`TokenState`] of a token row's `state` and `state_at`, or the column that is
/// wrong.
pub(crate) fn token_state(state: &str, at: Option<i64>) -> Result<TokenState, BadColumn> {
    let at = at.map(timestamp).transpose()?;
    Ok(match (state, at) {
        ("pending", None) => TokenState::Pending,
        ("live", None) => TokenState::Live,
        ("revoked", Some(at)) => TokenState::Revoked { at },
        ("redeemed", Some(at)) => TokenState::Redeemed { at },
        (other, _) => return Err(("tokens.state", other.to_owned())),
    })
}

/// A column the state needs, present.
fn present<T>(value: Option<T>, column: &'static str) -> Result<T, BadColumn> {
    value.ok_or((column, "missing".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(state: &str, at: Option<i64>) -> StateColumns {
        StateColumns {
            state: state.to_owned(),
            at,
            holder: None,
            until: None,
            error: None,
            skip_reason: None,
        }
    }

    #[test]
    fn each_state_with_the_columns_it_needs() {
        let at = Some(1_700_000_000_000_000_000);
        let t = timestamp(1_700_000_000_000_000_000).unwrap();
        assert_eq!(
            delivery_state(columns("pending", None)),
            Ok(DeliveryState::Pending)
        );
        assert_eq!(
            delivery_state(columns("sent", at)),
            Ok(DeliveryState::Sent { at: t })
        );
        let claimed = StateColumns {
            holder: Some("sender-1".into()),
            until: Some(1_700_000_030_000_000_000),
            ..columns("claimed", at)
        };
        assert_eq!(
            delivery_state(claimed),
            Ok(DeliveryState::Claimed {
                at: t,
                holder: SenderId::new("sender-1").unwrap(),
                until: timestamp(1_700_000_030_000_000_000).unwrap(),
            })
        );
        let failed = StateColumns {
            error: Some("550 no such user".into()),
            ..columns("failed", at)
        };
        assert_eq!(
            delivery_state(failed),
            Ok(DeliveryState::Failed {
                at: t,
                error: "550 no such user".into()
            })
        );
        let skipped = StateColumns {
            skip_reason: Some(SkipReason::Moved.code().into()),
            ..columns("skipped", at)
        };
        assert_eq!(
            delivery_state(skipped),
            Ok(DeliveryState::Skipped {
                at: t,
                reason: SkipReason::Moved
            })
        );
    }

    #[test]
    fn a_combination_the_crate_never_writes_names_its_column() {
        let at = Some(1_700_000_000_000_000_000);
        let column = |c: StateColumns| delivery_state(c).unwrap_err().0;
        assert_eq!(column(columns("sent", None)), "deliveries.state");
        assert_eq!(column(columns("pending", at)), "deliveries.state");
        assert_eq!(column(columns("bounced", at)), "deliveries.state");
        assert_eq!(column(columns("claimed", at)), "deliveries.holder");
        let no_lease = StateColumns {
            holder: Some("sender-1".into()),
            ..columns("claimed", at)
        };
        assert_eq!(column(no_lease), "deliveries.lease_until");
        let bad_holder = StateColumns {
            holder: Some(String::new()),
            until: at,
            ..columns("claimed", at)
        };
        assert_eq!(column(bad_holder), "deliveries.holder");
        assert_eq!(column(columns("failed", at)), "deliveries.error");
        assert_eq!(column(columns("skipped", at)), "deliveries.skip_reason");
        let unknown_reason = StateColumns {
            skip_reason: Some("bored".into()),
            ..columns("skipped", at)
        };
        assert_eq!(
            delivery_state(unknown_reason),
            Err(("deliveries.skip_reason", "bored".into()))
        );
    }

    #[test]
    fn token_states() {
        let t = timestamp(5).unwrap();
        assert_eq!(token_state("pending", None), Ok(TokenState::Pending));
        assert_eq!(token_state("live", None), Ok(TokenState::Live));
        assert_eq!(
            token_state("revoked", Some(5)),
            Ok(TokenState::Revoked { at: t })
        );
        assert_eq!(
            token_state("redeemed", Some(5)),
            Ok(TokenState::Redeemed { at: t })
        );
        assert_eq!(token_state("live", Some(5)).unwrap_err().0, "tokens.state");
        assert_eq!(token_state("redeemed", None).unwrap_err().0, "tokens.state");
    }
}
