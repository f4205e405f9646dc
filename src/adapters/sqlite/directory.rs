//! The directory's ports on SQLite: [`OwnerRepository`] (communities and owners, the
//! holders of delivered addresses, the mass edit, marking registered),
//! [`OwnerDirectory`] (upserts) and the import session, one transaction held by a
//! thread of its own.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use rusqlite::TransactionBehavior;

use super::SqliteHandle;
use super::connection::Inner;
use super::fail::{Fail, Message, Res, bad_row, not_found, precondition};
use super::parts::HoldsDirectory;
use super::rows::{
    COMMUNITY_COLUMNS, Db, OWNER_COLUMNS, json_array, json_list, read_community, read_id,
    read_owner, registered_columns, ts,
};
use super::store::close_open_invitations;
use crate::domain::{
    Community, CommunityId, EmailAddress, Owner, OwnerId, PropertyId, Registered, TimeZoneName,
    Timestamp, delivered_key,
};
use crate::eligibility::{AccessFilter, EmailFilter, OwnerFilter};
use crate::repository::{
    EmailEdit, EmailHolder, ImportSession, Marked, OwnerDirectory, OwnerRepository, RepoResult,
    RepositoryError,
};

/// Every holder of the keys in `?1` (a JSON array).
pub(super) const EMAIL_HOLDERS: &str = "SELECT o.email_key, o.id, o.property
     FROM (SELECT DISTINCT value AS key FROM json_each(?1)) k
     JOIN owner_access_owners o ON o.email_key = k.key";

/// The holders of the keys in `?1` that another owner holds too. The second holder is
/// looked for in the email_key index (rowids are in it), so a key held once costs two
/// index probes and returns nothing.
pub(super) const SHARED_EMAIL_HOLDERS: &str = "SELECT o.email_key, o.id, o.property
     FROM (SELECT DISTINCT value AS key FROM json_each(?1)) k
     JOIN owner_access_owners o ON o.email_key = k.key
     WHERE EXISTS (SELECT 1 FROM owner_access_owners o2
                   WHERE o2.email_key = k.key AND o2.rowid <> o.rowid)";

impl<P: HoldsDirectory> SqliteHandle<P> {
    /// The holders of the keys (passed through `delivered_key` here) that `sql` selects as
    /// (email_key, id, property), with the keys as a JSON array in `?1`.
    async fn holders(&self, keys: &[String], sql: &'static str) -> RepoResult<Vec<EmailHolder>> {
        let keys = json_array(keys.iter().map(|k| delivered_key(k)));
        self.read(move |db| {
            db.rows(sql, [keys], |r| {
                Ok(EmailHolder {
                    key: r.get(0)?,
                    owner: read_id!(OwnerId, r.get::<_, String>(1)?, "owners.id")?,
                    property: read_id!(PropertyId, r.get::<_, String>(2)?, "owners.property")?,
                })
            })
        })
        .await
    }
}

#[async_trait]
impl<P: HoldsDirectory> OwnerDirectory for SqliteHandle<P> {
    async fn upsert_community(&self, community: &Community) -> RepoResult<()> {
        let c = community.clone();
        self.write(move |db| put_community(db, &c)).await
    }

    async fn upsert_owners(&self, owners: &[Owner], now: Timestamp) -> RepoResult<()> {
        let owners = owners.to_vec();
        self.write(move |db| upsert_owners_in(db, &owners, now, P::STORE))
            .await
    }

    /// One transaction on a connection of its own, held by a blocking thread until
    /// `commit` (or until the session is dropped, which rolls it back). The session
    /// takes the file's write lock when it begins: other writes wait for it up to the
    /// busy time-out (10 s), as writes from another process do.
    async fn begin_import<'a>(&'a self, now: Timestamp) -> RepoResult<Box<dyn ImportSession + 'a>> {
        let (steps, queue) = std::sync::mpsc::sync_channel(1);
        let (ready, begun) = tokio::sync::oneshot::channel();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.import(now, P::STORE, queue, ready));
        let store = self.to_string();
        begun.await.map_err(|_| session_ended(&store))??;
        Ok(Box::new(SqliteImport {
            steps: Some(steps),
            store,
        }))
    }
}

#[async_trait]
impl<P: HoldsDirectory> OwnerRepository for SqliteHandle<P> {
    async fn community(&self, id: &CommunityId) -> RepoResult<Option<Community>> {
        let id = id.clone();
        self.read(move |db| {
            db.row(
                &format!("SELECT {COMMUNITY_COLUMNS} FROM owner_access_communities WHERE id = ?1"),
                [id.as_str()],
                read_community,
            )
        })
        .await
    }

    async fn communities(&self) -> RepoResult<Vec<Community>> {
        self.read(|db| {
            db.rows(
                &format!("SELECT {COMMUNITY_COLUMNS} FROM owner_access_communities ORDER BY id"),
                [],
                read_community,
            )
        })
        .await
    }

    async fn owners(&self, ids: &[OwnerId]) -> RepoResult<Vec<Owner>> {
        let expected = ids.len();
        let ids = json_list(ids.iter().map(OwnerId::as_str));
        self.read(move |db| {
            db.rows_at_most(
                &format!(
                    "SELECT {OWNER_COLUMNS} FROM owner_access_owners
                     WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id"
                ),
                [ids],
                expected,
                read_owner,
            )
        })
        .await
    }

    async fn community_owners(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<Owner>> {
        let community = community.clone();
        let filter = filter.clone();
        self.read(move |db| {
            // The store narrows by the indexed columns; `OwnerFilter::matches_owner`
            // has the last word (search folds Unicode case).
            let registered = registered_condition(filter.access);
            let email = match filter.email {
                EmailFilter::Any => "",
                EmailFilter::WithEmail => " AND email_key IS NOT NULL",
                EmailFilter::WithoutEmail => " AND email_key IS NULL",
            };
            let owners = db.rows(
                &format!(
                    "SELECT {OWNER_COLUMNS} FROM owner_access_owners WHERE community = ?1{registered}{email}"
                ),
                [community.as_str()],
                read_owner,
            )?;
            Ok(owners
                .into_iter()
                .filter(|o| filter.matches_owner(o))
                .collect())
        })
        .await
    }

    /// From the id column alone when the registered flag decides the filter (no
    /// email filter, no search text); otherwise through the records, as
    /// `community_owners` does.
    async fn community_owner_ids(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<OwnerId>> {
        let searching = filter
            .search
            .as_deref()
            .is_some_and(|s| !s.trim().is_empty());
        if filter.email != EmailFilter::Any || searching {
            let owners = self.community_owners(community, filter).await?;
            return Ok(owners.into_iter().map(|o| o.id).collect());
        }
        let registered = registered_condition(filter.access);
        let community = community.clone();
        self.read(move |db| {
            db.rows(
                &format!("SELECT id FROM owner_access_owners WHERE community = ?1{registered}"),
                [community.as_str()],
                |r| read_id!(OwnerId, r.get::<_, String>(0)?, "owners.id"),
            )
        })
        .await
    }

    async fn email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.holders(keys, EMAIL_HOLDERS).await
    }

    async fn shared_email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.holders(keys, SHARED_EMAIL_HOLDERS).await
    }

    async fn update_emails(&self, edits: &[EmailEdit]) -> RepoResult<Vec<OwnerId>> {
        let edits = edits.to_vec();
        self.write(move |db| {
            let ids: Vec<&str> = edits.iter().map(|e| e.owner.as_str()).collect();
            let mut stored = owners_by_id(db, &ids)?;
            // The last edit of an owner wins.
            let mut last: BTreeMap<&OwnerId, &EmailEdit> = BTreeMap::new();
            for edit in &edits {
                if !stored.contains_key(&edit.owner) {
                    return Err(not_found("owner", &edit.owner));
                }
                last.insert(&edit.owner, edit);
            }
            // Compare-and-set on uniqueness, before anything is written.
            let mut taken: HashMap<String, &OwnerId> = HashMap::new();
            for (owner, edit) in &last {
                let Some(key) = edit
                    .email
                    .as_deref()
                    .map(delivered_key)
                    .filter(|k| !k.is_empty())
                else {
                    continue;
                };
                if let Some(other) = taken.insert(key.clone(), owner) {
                    return Err(precondition(format!(
                        "owners `{other}` and `{owner}` would share `{key}`"
                    )));
                }
            }
            let holders = db.rows(
                "SELECT o.email_key, o.id FROM (SELECT DISTINCT value AS key FROM json_each(?1)) k
                 JOIN owner_access_owners o ON o.email_key = k.key ORDER BY o.email_key, o.id",
                [json_list(taken.keys().map(String::as_str))],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )?;
            let edited: HashSet<&str> = last.keys().map(|o| o.as_str()).collect();
            if let Some((key, holder)) =
                holders.iter().find(|(_, id)| !edited.contains(id.as_str()))
            {
                return Err(precondition(format!("`{key}` is held by owner `{holder}`")));
            }
            let mut changed = Vec::new();
            for (id, edit) in last {
                let Some(mut owner) = stored.remove(id) else {
                    continue;
                };
                let old_key = owner.email_key();
                owner.primary_email = edit.email.clone();
                if owner.email_key() != old_key {
                    changed.push(id.clone());
                }
                db.exec(
                    "UPDATE owner_access_owners SET primary_email = ?2, email_key = ?3 WHERE id = ?1",
                    rusqlite::params![id.as_str(), owner.primary_email, owner.email_key()],
                )?;
            }
            Ok(changed)
        })
        .await
    }

    async fn mark_registered(
        &self,
        owner: &OwnerId,
        sent_to: &str,
        at: Timestamp,
    ) -> RepoResult<Marked> {
        let owner = owner.clone();
        let key = delivered_key(sent_to);
        self.write(move |db| {
            let Some(mut stored) = db.row(
                &format!("SELECT {OWNER_COLUMNS} FROM owner_access_owners WHERE id = ?1"),
                [owner.as_str()],
                read_owner,
            )?
            else {
                return Ok(Marked::UnknownOwner);
            };
            if key.is_empty() || stored.email_key().as_deref() != Some(key.as_str()) {
                return Ok(Marked::AddressChanged);
            }
            if !stored.is_registered() {
                db.exec(
                    "UPDATE owner_access_owners SET registered = 1, registered_at = ?2 WHERE id = ?1",
                    rusqlite::params![stored.id.as_str(), ts(at)?],
                )?;
                stored.registered = Some(Registered { at: Some(at) });
            }
            Ok(Marked::Registered(Box::new(stored)))
        })
        .await
    }
}

pub(super) fn put_owner(db: &Db<'_>, owner: &Owner) -> Res<()> {
    let (registered, registered_at) = registered_columns(owner.registered.as_ref())?;
    db.exec(
        "INSERT INTO owner_access_owners (id, community, property, first_name, last_name, property_address, \
             primary_email, email_key, registered, registered_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (id) DO UPDATE SET
             community = excluded.community, property = excluded.property,
             first_name = excluded.first_name, last_name = excluded.last_name,
             property_address = excluded.property_address, primary_email = excluded.primary_email,
             email_key = excluded.email_key, registered = excluded.registered,
             registered_at = excluded.registered_at",
        rusqlite::params![
            owner.id.as_str(),
            owner.community.as_str(),
            owner.property.as_str(),
            owner.first_name,
            owner.last_name,
            owner.property_address,
            owner.primary_email,
            owner.email_key(),
            registered,
            registered_at,
        ],
    )?;
    Ok(())
}

pub(super) fn owners_by_id(db: &Db<'_>, ids: &[&str]) -> Res<HashMap<OwnerId, Owner>> {
    let owners = db.rows(
        &format!(
            "SELECT {OWNER_COLUMNS} FROM owner_access_owners WHERE id IN (SELECT value FROM json_each(?1))"
        ),
        [json_list(ids.iter().copied())],
        read_owner,
    )?;
    Ok(owners.into_iter().map(|o| (o.id.clone(), o)).collect())
}

pub(super) fn put_community(db: &Db<'_>, c: &Community) -> Res<()> {
    db.exec(
        "INSERT INTO owner_access_communities (id, name, reply_to, time_zone, logo_url, accent_color)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, reply_to = excluded.reply_to,
             time_zone = excluded.time_zone, logo_url = excluded.logo_url,
             accent_color = excluded.accent_color",
        rusqlite::params![
            c.id.as_str(),
            c.name,
            c.reply_to.as_ref().map(EmailAddress::as_str),
            c.time_zone.as_ref().map(TimeZoneName::as_str),
            c.branding.logo_url(),
            c.branding.accent_color(),
        ],
    )?;
    Ok(())
}

/// `upsert_owners` inside a transaction: each owner merged onto the stored one.
///
/// `revoke`: the store part is in this handle, so an owner whose address changes has
/// their open invitations closed (their links revoked) in the same transaction. A
/// directory alone leaves the store alone: a link works only while the owner's
/// address is the one it was sent to, which the store checks when the link is used.
pub(super) fn upsert_owners_in(
    db: &Db<'_>,
    owners: &[Owner],
    now: Timestamp,
    revoke: bool,
) -> Res<()> {
    let now = ts(now)?;
    let ids: Vec<&str> = owners.iter().map(|o| o.id.as_str()).collect();
    let mut stored = owners_by_id(db, &ids)?;
    for incoming in owners {
        let (merged, email_changed) = Owner::merge_from_host(stored.get(&incoming.id), incoming);
        if email_changed && revoke {
            close_open_invitations(db, &merged.id, now)?;
        }
        put_owner(db, &merged)?;
        stored.insert(merged.id.clone(), merged);
    }
    Ok(())
}

/// The condition on the registered flag that an access tab asks of the owners' own
/// fields (see [`OwnerFilter::matches_owner`]).
pub(super) fn registered_condition(access: AccessFilter) -> &'static str {
    match access {
        AccessFilter::All => "",
        AccessFilter::Unregistered | AccessFilter::Invited => " AND registered = 0",
        AccessFilter::Registered => " AND registered = 1",
    }
}

/// One step of an import, for the thread that holds its transaction.
pub(super) enum ImportStep {
    Communities(Vec<Community>),
    Owners(Vec<Owner>),
    Commit,
}

pub(super) type ImportReply = tokio::sync::oneshot::Sender<RepoResult<()>>;

/// An import into a [`SqliteHandle`] with the directory part: each call is handed to the thread that holds
/// the session's transaction, and waits for its answer.
pub(super) struct SqliteImport {
    steps: Option<std::sync::mpsc::SyncSender<(ImportStep, ImportReply)>>,
    store: String,
}

pub(super) fn session_ended(store: &str) -> RepositoryError {
    RepositoryError::Backend {
        store: store.to_owned(),
        source: Box::new(Message(
            "the import session ended (after an error, nothing of it was kept)".into(),
        )),
    }
}

impl SqliteImport {
    async fn step(&mut self, step: ImportStep) -> RepoResult<()> {
        let steps = self
            .steps
            .as_ref()
            .ok_or_else(|| session_ended(&self.store))?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        // The thread answers each step before the next is sent: the queue is empty,
        // so this never blocks.
        if steps.send((step, reply)).is_err() {
            self.steps = None;
            return Err(session_ended(&self.store));
        }
        let result = answer
            .await
            .unwrap_or_else(|_| Err(session_ended(&self.store)));
        if result.is_err() {
            self.steps = None;
        }
        result
    }
}

#[async_trait]
impl ImportSession for SqliteImport {
    async fn upsert_communities(&mut self, communities: &[Community]) -> RepoResult<()> {
        self.step(ImportStep::Communities(communities.to_vec()))
            .await
    }

    async fn upsert_owners(&mut self, owners: &[Owner]) -> RepoResult<()> {
        self.step(ImportStep::Owners(owners.to_vec())).await
    }

    async fn commit(mut self: Box<Self>) -> RepoResult<()> {
        self.step(ImportStep::Commit).await
    }
}

impl Inner {
    /// The thread of an import session: opens its connection, begins, and runs each
    /// step in the transaction until the commit, an error (rolled back, and the
    /// session ends) or the session's end (dropped: rolled back).
    fn import(
        &self,
        now: Timestamp,
        revoke: bool,
        queue: std::sync::mpsc::Receiver<(ImportStep, ImportReply)>,
        ready: ImportReply,
    ) {
        let mut conn = match self.session_connection() {
            Ok(conn) => conn,
            Err(e) => {
                let _ = ready.send(Err(self.fail(Fail::Sql(e))));
                return;
            }
        };
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let _ = ready.send(Err(self.fail(Fail::Sql(e))));
                return;
            }
        };
        if ready.send(Ok(())).is_err() {
            return;
        }
        let db = Db {
            conn: &tx,
            count: &self.statements,
        };
        while let Ok((step, reply)) = queue.recv() {
            let result = match step {
                ImportStep::Communities(communities) => {
                    communities.iter().try_for_each(|c| put_community(&db, c))
                }
                ImportStep::Owners(owners) => upsert_owners_in(&db, &owners, now, revoke),
                ImportStep::Commit => {
                    let _ = reply.send(tx.commit().map_err(|e| self.fail(Fail::Sql(e))));
                    return;
                }
            };
            if let Err(e) = result {
                let _ = reply.send(Err(self.fail(e)));
                return; // the transaction rolls back as it is dropped
            }
            let _ = reply.send(Ok(()));
        }
    }
}
