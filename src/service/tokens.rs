//! The owner's side: a link verified (read-only) and redeemed (once), across the two
//! ports in three steps; and the registrations a crash left owed, completed here.

use crate::domain::{
    ActivityEntry, ActivityKind, Owner, Timestamp, TokenHash, TokenRecord, TokenRejection,
    TokenState, delivered_key,
};
use crate::error::{Error, Result};
use crate::repository::{Marked, OwedRegistration, OwnerRepositoryExt, RedeemOutcome};
use crate::token::{hash_token, looks_like_token};

use super::OwnerAccess;

/// A valid registration link's owner, as `verify` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The owner.
    pub owner: Owner,
    /// When the link expires.
    pub expires_at: Timestamp,
}

/// A completed registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The owner, now registered.
    pub owner: Owner,
    /// When.
    pub at: Timestamp,
}

impl OwnerAccess {
    /// Checks a registration token without using it: for the page that shows the
    /// registration form (mail scanners open links, so showing must not consume).
    ///
    /// # Errors
    /// - [`Error::InvalidToken`]: the link does not work: empty, malformed, unknown,
    ///   expired, revoked (a newer message was accepted, or the owner's email is no
    ///   longer the address it was sent to), not yet recorded as sent, or used (the
    ///   owner is registered). One public message for all; `reason` is for logs.
    /// - [`Error::Repository`] with `Side::Store` (reading the token) or
    ///   `Side::Directory` (reading its owner): the port failed, not the link; show
    ///   "try again later", not "invalid link".
    ///
    /// Nothing changes, except that a registration a crashed redeem left owed is
    /// completed first (see [`redeem`](Self::redeem)): its failure is a `Repository`
    /// error from the store (reading or settling it) or from the directory (marking the
    /// owner); what was completed before it stays completed, the rest waits for the
    /// next call.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken> {
        let verified = self.verify_link(token).await;
        if let Err(Error::InvalidToken { reason }) = &verified {
            tracing::info!(reason = %reason, "link refused on verify");
        }
        verified
    }

    /// [`verify`](Self::verify)'s steps.
    async fn verify_link(&self, token: &str) -> Result<VerifiedToken> {
        self.settle_owed().await?;
        let record = self.live_token(token).await?;
        let owner = self
            .directory
            .owner(&record.owner)
            .await
            .map_err(Error::directory)?
            .ok_or(Error::InvalidToken {
                reason: TokenRejection::Unknown,
            })?;
        check_holder(&owner, &record)?;
        Ok(VerifiedToken {
            owner,
            expires_at: record.expires_at,
        })
    }

    async fn live_token(&self, token: &str) -> Result<TokenRecord> {
        let token = token.trim();
        if !looks_like_token(token) {
            return Err(Error::InvalidToken {
                reason: TokenRejection::Unknown,
            });
        }
        let record = self
            .store
            .token(&hash_token(token))
            .await
            .map_err(Error::store)?
            .ok_or(Error::InvalidToken {
                reason: TokenRejection::Unknown,
            })?;
        record
            .check(self.clock.now())
            .map_err(|reason| Error::InvalidToken { reason })?;
        Ok(record)
    }

    /// Completes registration with a token: once. Of two calls at once with one token
    /// (or with two links of one owner), exactly one answers with the registration.
    ///
    /// Three steps across the two ports, none inside the other's transaction: the
    /// store spends the token, revokes the owner's other links and records the
    /// registration owed; the directory marks the owner registered (refusing when
    /// their email is no longer the address the link was sent to); the store clears
    /// the owed registration and appends the Registered entry. Then the call takes the
    /// answer ([`InvitationStore::answer_redeem`]). A crash between the steps leaves
    /// the registration owed: the next redeem, verify, review or send completes it,
    /// and the next redeem of the same link answers with the registration (the first
    /// call never answered). A second call racing a live first one finds the answer
    /// taken, or takes it first and the first call answers `AlreadyUsed`: either way,
    /// one `Ok`.
    ///
    /// # Errors
    /// - [`Error::InvalidToken`]: as for [`verify`](Self::verify); a link whose owner's
    ///   email changed since it was sent is `Revoked`; a link whose redeem was already
    ///   answered is `AlreadyUsed`. Nothing changes.
    /// - [`Error::Repository`] before the store spent the token (with `Side::Store`:
    ///   reading registrations owed, the token, or spending it; with `Side::Directory`:
    ///   reading the owner): nothing changed, the link still works.
    /// - [`Error::Repository`] with `Side::Directory` from marking the owner
    ///   registered: the token is spent and the registration owed. The next redeem of
    ///   the same link completes it and answers with the registration; a verify,
    ///   roster, review or send completes it too.
    /// - [`Error::Repository`] with `Side::Store` from settling the registration or
    ///   taking the answer: the owner is marked registered in the directory; the next
    ///   redeem of the same link finishes the bookkeeping and answers with the
    ///   registration.
    ///
    /// [`InvitationStore::answer_redeem`]: crate::repository::InvitationStore::answer_redeem
    pub async fn redeem(&self, token: &str) -> Result<Registration> {
        let redeemed = self.redeem_link(token).await;
        match &redeemed {
            Ok(registration) => {
                tracing::info!(owner = %registration.owner.id, "link redeemed: owner registered");
            }
            Err(Error::InvalidToken { reason }) => {
                tracing::info!(reason = %reason, "redeem refused");
            }
            Err(_) => {}
        }
        redeemed
    }

    /// [`redeem`](Self::redeem)'s steps.
    async fn redeem_link(&self, token: &str) -> Result<Registration> {
        self.settle_owed().await?;
        let record = match self.live_token(token).await {
            Ok(record) => record,
            Err(Error::InvalidToken {
                reason: TokenRejection::AlreadyUsed,
            }) => return self.answer_spent(&hash_token(token.trim())).await,
            Err(e) => return Err(e),
        };
        let owner = self
            .directory
            .owner(&record.owner)
            .await
            .map_err(Error::directory)?
            .ok_or(Error::InvalidToken {
                reason: TokenRejection::Unknown,
            })?;
        check_holder(&owner, &record)?;
        let now = self.clock.now();
        let token = match self
            .store
            .redeem_token(&record.hash, now)
            .await
            .map_err(Error::store)?
        {
            RedeemOutcome::Redeemed { token } => token,
            RedeemOutcome::Rejected(TokenRejection::AlreadyUsed) => {
                return self.answer_spent(&record.hash).await;
            }
            RedeemOutcome::Rejected(reason) => return Err(Error::InvalidToken { reason }),
        };
        let owed = OwedRegistration {
            token: token.hash,
            owner: token.owner.clone(),
            batch: token.batch.clone(),
            sent_to: token.sent_to.clone(),
            at: now,
        };
        match self.settle(&owed).await? {
            Marked::Registered(owner) => self.take_answer(&owed.token, *owner, now).await,
            Marked::AddressChanged => Err(Error::InvalidToken {
                reason: TokenRejection::Revoked,
            }),
            Marked::UnknownOwner => Err(Error::InvalidToken {
                reason: TokenRejection::Unknown,
            }),
        }
    }

    /// A redeem of a spent link: the registration when its first redeem never
    /// answered (it crashed after spending the token) and this call takes the answer;
    /// otherwise `AlreadyUsed`. The registration owed, if any, was completed by the
    /// caller's `settle_owed`.
    async fn answer_spent(&self, hash: &TokenHash) -> Result<Registration> {
        let used = Error::InvalidToken {
            reason: TokenRejection::AlreadyUsed,
        };
        let Some(record) = self.store.token(hash).await.map_err(Error::store)? else {
            return Err(used);
        };
        let TokenState::Redeemed { at } = record.state else {
            return Err(used);
        };
        let Some(owner) = self
            .directory
            .owner(&record.owner)
            .await
            .map_err(Error::directory)?
        else {
            return Err(Error::InvalidToken {
                reason: TokenRejection::Unknown,
            });
        };
        // The first call's mark was refused (the email changed): no registration.
        if !owner.is_registered() {
            return Err(Error::InvalidToken {
                reason: TokenRejection::Revoked,
            });
        }
        self.take_answer(hash, owner, at).await
    }

    /// The registration, when this call is the one that answers for the spent token.
    async fn take_answer(
        &self,
        hash: &TokenHash,
        owner: Owner,
        at: Timestamp,
    ) -> Result<Registration> {
        if self
            .store
            .answer_redeem(hash, self.clock.now())
            .await
            .map_err(Error::store)?
        {
            Ok(Registration { owner, at })
        } else {
            Err(Error::InvalidToken {
                reason: TokenRejection::AlreadyUsed,
            })
        }
    }

    /// Completes every registration owed (normally none): what verify, review, the
    /// roster and a send do first, so that an owner whose redeem crashed midway counts
    /// as registered and is never sent another invitation.
    pub(super) async fn settle_owed(&self) -> Result<()> {
        for owed in self
            .store
            .owed_registrations()
            .await
            .map_err(Error::store)?
        {
            self.settle(&owed).await?;
        }
        Ok(())
    }

    /// Steps 2 and 3 of a redeem: the directory's mark, then the store's settlement
    /// (with the Registered entry when the mark held; at most once, whoever settles).
    async fn settle(&self, owed: &OwedRegistration) -> Result<Marked> {
        let marked = self
            .directory
            .mark_registered(&owed.owner, &owed.sent_to, owed.at)
            .await
            .map_err(Error::directory)?;
        let entry = match &marked {
            Marked::Registered(owner) => Some(ActivityEntry {
                community: owner.community.clone(),
                at: owed.at,
                kind: ActivityKind::Registered {
                    owner: owner.id.clone(),
                    batch: owed.batch.clone(),
                },
            }),
            Marked::AddressChanged | Marked::UnknownOwner => None,
        };
        self.store
            .settle_registration(&owed.token, entry.as_ref())
            .await
            .map_err(Error::store)?;
        Ok(marked)
    }
}

/// Whether `owner` may use a link of theirs: not registered, and their primary email
/// still the address the link was sent to (by `delivered_key`, computed now).
fn check_holder(owner: &Owner, record: &TokenRecord) -> Result<()> {
    if owner.is_registered() {
        return Err(Error::InvalidToken {
            reason: TokenRejection::AlreadyUsed,
        });
    }
    let sent_to = delivered_key(&record.sent_to);
    if sent_to.is_empty() || owner.email_key().as_deref() != Some(sent_to.as_str()) {
        return Err(Error::InvalidToken {
            reason: TokenRejection::Revoked,
        });
    }
    Ok(())
}
