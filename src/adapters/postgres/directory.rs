//! [`PostgresDirectory`]: the crate's own communities and owners
//! ([`OwnerRepository`] and [`OwnerDirectory`]) on the `directory` tables.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Object};

use crate::domain::{
    Community, CommunityId, EmailAddress, Owner, OwnerId, PropertyId, Registered, TimeZoneName,
    Timestamp, delivered_key,
};
use crate::eligibility::{AccessFilter, EmailFilter, OwnerFilter};
use crate::repository::{
    EmailEdit, EmailHolder, ImportSession, Marked, OwnerDirectory, OwnerRepository, RepoResult,
    RepositoryError,
};

use super::PostgresDirectory;
use super::connection::{Res, classify, exec, not_found, precondition, row, rows};
use super::rows::{COMMUNITY_COLUMNS, OWNER_COLUMNS, read_community, read_id, read_owner, ts};

/// The advisory lock a mass edit takes ("OAcc", "mail"): two edits at once would
/// each check uniqueness against the other's old addresses.
const EMAIL_EDIT_LOCK: (i32, i32) = (0x4F41_6363, 0x6D61_696C);

/// The condition on the registered flag that an access tab asks of the owners' own
/// fields (see [`OwnerFilter::matches_owner`]).
fn registered_condition(access: AccessFilter) -> &'static str {
    match access {
        AccessFilter::All => "",
        AccessFilter::Unregistered | AccessFilter::Invited => " AND NOT registered",
        AccessFilter::Registered => " AND registered",
    }
}

/// Every holder of the keys in `$1`.
const EMAIL_HOLDERS: &str = "SELECT o.email_key, o.id, o.property
     FROM (SELECT DISTINCT unnest($1::text[]) AS key) k
     JOIN owner_access_owners o ON o.email_key = k.key";

/// The holders of the keys in `$1` that another owner holds too.
const SHARED_EMAIL_HOLDERS: &str = "SELECT o.email_key, o.id, o.property
     FROM (SELECT DISTINCT unnest($1::text[]) AS key) k
     JOIN owner_access_owners o ON o.email_key = k.key
     WHERE EXISTS (SELECT 1 FROM owner_access_owners o2
                   WHERE o2.email_key = k.key AND o2.id <> o.id)";

impl PostgresDirectory {
    async fn holders(&self, keys: &[String], sql: &'static str) -> RepoResult<Vec<EmailHolder>> {
        let keys: Vec<String> = keys.iter().map(|k| delivered_key(k)).collect();
        self.db
            .run(async {
                let c = self.db.client().await?;
                rows(&c, sql, &[&keys])
                    .await?
                    .iter()
                    .map(|r| {
                        Ok(EmailHolder {
                            key: r.try_get(0)?,
                            owner: read_id!(OwnerId, r.try_get::<_, String>(1)?, "owners.id")?,
                            property: read_id!(
                                PropertyId,
                                r.try_get::<_, String>(2)?,
                                "owners.property"
                            )?,
                        })
                    })
                    .collect()
            })
            .await
    }
}

/// Stores a community (insert or replace).
async fn put_community<C: GenericClient + Sync>(c: &C, community: &Community) -> Res<()> {
    exec(
        c,
        "INSERT INTO owner_access_communities (id, name, reply_to, time_zone, logo_url, accent_color)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, reply_to = excluded.reply_to,
             time_zone = excluded.time_zone, logo_url = excluded.logo_url,
             accent_color = excluded.accent_color",
        &[
            &community.id.as_str(),
            &community.name,
            &community.reply_to.as_ref().map(EmailAddress::as_str),
            &community.time_zone.as_ref().map(TimeZoneName::as_str),
            &community.branding.logo_url(),
            &community.branding.accent_color(),
        ],
    )
    .await?;
    Ok(())
}

/// `upsert_owners` inside a transaction: each owner merged onto the stored one (and
/// onto an earlier one of the same call), written in one statement; with
/// `revoke_links` (the directory shares the store's database), the open invitations
/// of the owners whose address changed are closed in the same transaction (a trigger
/// revokes their links).
async fn upsert_owners_in<C: GenericClient + Sync>(
    c: &C,
    owners: &[Owner],
    now: Timestamp,
    revoke_links: bool,
) -> Res<()> {
    if owners.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = owners.iter().map(|o| o.id.as_str()).collect();
    let stored_rows = rows(
        c,
        &format!("SELECT {OWNER_COLUMNS} FROM owner_access_owners WHERE id = ANY($1) FOR UPDATE"),
        &[&ids],
    )
    .await?;
    let mut merged: BTreeMap<OwnerId, Owner> = BTreeMap::new();
    for r in &stored_rows {
        let owner = read_owner(r)?;
        merged.insert(owner.id.clone(), owner);
    }
    let mut changed: Vec<&str> = Vec::new();
    let mut written: Vec<&OwnerId> = Vec::new();
    for incoming in owners {
        let (owner, email_changed) = Owner::merge_from_host(merged.get(&incoming.id), incoming);
        if email_changed {
            changed.push(incoming.id.as_str());
        }
        written.push(&incoming.id);
        merged.insert(owner.id.clone(), owner);
    }
    let written: HashSet<&OwnerId> = written.into_iter().collect();
    let owners: Vec<&Owner> = merged
        .values()
        .filter(|o| written.contains(&o.id))
        .collect();
    let mut cols = OwnerColumns::default();
    for o in &owners {
        cols.push(o)?;
    }
    exec(
        c,
        "INSERT INTO owner_access_owners (id, community, property, first_name, last_name,
             property_address, primary_email, email_key, registered, registered_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
             $6::text[], $7::text[], $8::text[], $9::bool[], $10::int8[])
         ON CONFLICT (id) DO UPDATE SET
             community = excluded.community, property = excluded.property,
             first_name = excluded.first_name, last_name = excluded.last_name,
             property_address = excluded.property_address, primary_email = excluded.primary_email,
             email_key = excluded.email_key, registered = excluded.registered,
             registered_at = excluded.registered_at",
        &[
            &cols.id,
            &cols.community,
            &cols.property,
            &cols.first_name,
            &cols.last_name,
            &cols.property_address,
            &cols.primary_email,
            &cols.email_key,
            &cols.registered,
            &cols.registered_at,
        ],
    )
    .await?;
    if revoke_links && !changed.is_empty() {
        exec(
            c,
            "UPDATE owner_access_invitations SET state = 'closed', closed_at = $2
             WHERE state <> 'closed' AND owner = ANY($1)",
            &[&changed, &ts(now)?],
        )
        .await?;
    }
    Ok(())
}

/// Owners as columns, for one `unnest` insert.
#[derive(Default)]
struct OwnerColumns<'a> {
    id: Vec<&'a str>,
    community: Vec<&'a str>,
    property: Vec<&'a str>,
    first_name: Vec<&'a str>,
    last_name: Vec<&'a str>,
    property_address: Vec<&'a str>,
    primary_email: Vec<Option<&'a str>>,
    email_key: Vec<Option<String>>,
    registered: Vec<bool>,
    registered_at: Vec<Option<i64>>,
}

impl<'a> OwnerColumns<'a> {
    fn push(&mut self, o: &'a Owner) -> Res<()> {
        self.id.push(o.id.as_str());
        self.community.push(o.community.as_str());
        self.property.push(o.property.as_str());
        self.first_name.push(&o.first_name);
        self.last_name.push(&o.last_name);
        self.property_address.push(&o.property_address);
        self.primary_email.push(o.primary_email.as_deref());
        self.email_key.push(o.email_key());
        self.registered.push(o.registered.is_some());
        self.registered_at.push(
            o.registered
                .as_ref()
                .and_then(|r| r.at)
                .map(ts)
                .transpose()?,
        );
        Ok(())
    }
}

#[async_trait]
impl OwnerDirectory for PostgresDirectory {
    async fn upsert_community(&self, community: &Community) -> RepoResult<()> {
        self.db
            .run(async {
                let c = self.db.client().await?;
                put_community(&c, community).await
            })
            .await
    }

    async fn upsert_owners(&self, owners: &[Owner], now: Timestamp) -> RepoResult<()> {
        self.db
            .run(async {
                let mut c = self.db.client().await?;
                let tx = c.transaction().await?;
                upsert_owners_in(&tx, owners, now, self.revoke_links).await?;
                tx.commit().await?;
                Ok(())
            })
            .await
    }

    /// One transaction on a connection of its own until `commit`; a session dropped
    /// before it closes that connection, which rolls the transaction back.
    async fn begin_import<'a>(&'a self, now: Timestamp) -> RepoResult<Box<dyn ImportSession + 'a>> {
        let client = self
            .db
            .run(async {
                let c = self.db.client().await?;
                c.batch_execute("BEGIN").await?;
                Ok(c)
            })
            .await?;
        Ok(Box::new(PgImport {
            client: Some(client),
            dir: self,
            now,
        }))
    }
}

/// An import into a [`PostgresDirectory`]: a transaction held open on one connection.
struct PgImport<'a> {
    /// `None` once the session ended (committed, or failed and rolled back).
    client: Option<Object>,
    dir: &'a PostgresDirectory,
    now: Timestamp,
}

impl PgImport<'_> {
    fn ended(&self) -> RepositoryError {
        RepositoryError::Backend {
            store: self.dir.db.name.clone(),
            source: Box::new(super::connection::Message(
                "the import session ended (after an error, nothing of it was kept)".into(),
            )),
        }
    }

    /// Runs a step in the session's transaction; an error ends the session (its
    /// connection is closed, the server rolls back).
    async fn step(
        &mut self,
        step: impl AsyncFnOnce(&Object, &PostgresDirectory, Timestamp) -> Res<()>,
    ) -> RepoResult<()> {
        let Some(client) = self.client.take() else {
            return Err(self.ended());
        };
        match step(&client, self.dir, self.now).await {
            Ok(()) => {
                self.client = Some(client);
                Ok(())
            }
            Err(e) => {
                drop(Object::take(client));
                Err(classify(&self.dir.db.name, e))
            }
        }
    }

    /// Ends the session without committing: the connection leaves the pool and
    /// closes, so the server rolls the transaction back.
    fn abandon(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

impl Drop for PgImport<'_> {
    fn drop(&mut self) {
        self.abandon();
    }
}

#[async_trait]
impl ImportSession for PgImport<'_> {
    async fn upsert_communities(&mut self, communities: &[Community]) -> RepoResult<()> {
        self.step(async |c, _, _| {
            for community in communities {
                put_community(c, community).await?;
            }
            Ok(())
        })
        .await
    }

    async fn upsert_owners(&mut self, owners: &[Owner]) -> RepoResult<()> {
        self.step(async |c, dir, now| upsert_owners_in(c, owners, now, dir.revoke_links).await)
            .await
    }

    async fn commit(mut self: Box<Self>) -> RepoResult<()> {
        self.step(async |c, _, _| Ok(c.batch_execute("COMMIT").await?))
            .await?;
        // Committed: the connection goes back to the pool.
        drop(self.client.take());
        Ok(())
    }
}

#[async_trait]
impl OwnerRepository for PostgresDirectory {
    async fn community(&self, id: &CommunityId) -> RepoResult<Option<Community>> {
        self.db
            .run(async {
                let c = self.db.client().await?;
                row(
                    &c,
                    &format!(
                        "SELECT {COMMUNITY_COLUMNS} FROM owner_access_communities WHERE id = $1"
                    ),
                    &[&id.as_str()],
                )
                .await?
                .as_ref()
                .map(read_community)
                .transpose()
            })
            .await
    }

    async fn communities(&self) -> RepoResult<Vec<Community>> {
        self.db
            .run(async {
                let c = self.db.client().await?;
                rows(
                    &c,
                    &format!(
                        "SELECT {COMMUNITY_COLUMNS} FROM owner_access_communities ORDER BY id"
                    ),
                    &[],
                )
                .await?
                .iter()
                .map(read_community)
                .collect()
            })
            .await
    }

    async fn owners(&self, ids: &[OwnerId]) -> RepoResult<Vec<Owner>> {
        let ids: Vec<&str> = ids.iter().map(OwnerId::as_str).collect();
        self.db
            .run(async {
                let c = self.db.client().await?;
                rows(
                    &c,
                    &format!(
                        "SELECT {OWNER_COLUMNS} FROM owner_access_owners WHERE id = ANY($1) ORDER BY id"
                    ),
                    &[&ids],
                )
                .await?
                .iter()
                .map(read_owner)
                .collect()
            })
            .await
    }

    async fn community_owners(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<Owner>> {
        // The server narrows by the indexed columns; `OwnerFilter::matches_owner` has
        // the last word (search folds Unicode case).
        let registered = registered_condition(filter.access);
        let email = match filter.email {
            EmailFilter::Any => "",
            EmailFilter::WithEmail => " AND email_key IS NOT NULL",
            EmailFilter::WithoutEmail => " AND email_key IS NULL",
        };
        self.db
            .run(async {
                let c = self.db.client().await?;
                let found = rows(
                    &c,
                    &format!(
                        "SELECT {OWNER_COLUMNS} FROM owner_access_owners
                         WHERE community = $1{registered}{email}"
                    ),
                    &[&community.as_str()],
                )
                .await?;
                let mut owners = Vec::with_capacity(found.len());
                for r in &found {
                    let owner = read_owner(r)?;
                    if filter.matches_owner(&owner) {
                        owners.push(owner);
                    }
                }
                Ok(owners)
            })
            .await
    }

    /// From the id column alone when the registered flag decides the filter;
    /// otherwise through the records, as `community_owners` does.
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
        self.db
            .run(async {
                let c = self.db.client().await?;
                rows(
                    &c,
                    &format!("SELECT id FROM owner_access_owners WHERE community = $1{registered}"),
                    &[&community.as_str()],
                )
                .await?
                .iter()
                .map(|r| read_id!(OwnerId, r.try_get::<_, String>(0)?, "owners.id"))
                .collect()
            })
            .await
    }

    async fn email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.holders(keys, EMAIL_HOLDERS).await
    }

    async fn shared_email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.holders(keys, SHARED_EMAIL_HOLDERS).await
    }

    /// Serialised with other mass edits by an advisory lock, so the uniqueness check
    /// and the write see the same addresses.
    async fn update_emails(&self, edits: &[EmailEdit]) -> RepoResult<Vec<OwnerId>> {
        self.db
            .run(async {
                let mut c = self.db.client().await?;
                let tx = c.transaction().await?;
                exec(
                    &tx,
                    "SELECT pg_advisory_xact_lock($1, $2)",
                    &[&EMAIL_EDIT_LOCK.0, &EMAIL_EDIT_LOCK.1],
                )
                .await?;
                let ids: Vec<&str> = edits.iter().map(|e| e.owner.as_str()).collect();
                let mut stored: HashMap<OwnerId, Owner> = HashMap::new();
                for r in rows(
                    &tx,
                    &format!(
                        "SELECT {OWNER_COLUMNS} FROM owner_access_owners WHERE id = ANY($1) FOR UPDATE"
                    ),
                    &[&ids],
                )
                .await?
                .iter()
                {
                    let owner = read_owner(r)?;
                    stored.insert(owner.id.clone(), owner);
                }
                // The last edit of an owner wins.
                let mut last: BTreeMap<&OwnerId, &EmailEdit> = BTreeMap::new();
                for edit in edits {
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
                let keys: Vec<&str> = taken.keys().map(String::as_str).collect();
                let holders = rows(
                    &tx,
                    "SELECT o.email_key, o.id FROM owner_access_owners o
                     WHERE o.email_key = ANY($1) ORDER BY o.email_key, o.id",
                    &[&keys],
                )
                .await?;
                let edited: HashSet<&str> = last.keys().map(|o| o.as_str()).collect();
                for r in &holders {
                    let (key, holder): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                    if !edited.contains(holder.as_str()) {
                        return Err(precondition(format!("`{key}` is held by owner `{holder}`")));
                    }
                }
                let mut changed = Vec::new();
                let (mut ids, mut emails, mut keys) = (Vec::new(), Vec::new(), Vec::new());
                for (id, edit) in last {
                    let Some(mut owner) = stored.remove(id) else {
                        continue;
                    };
                    let old_key = owner.email_key();
                    owner.primary_email = edit.email.clone();
                    if owner.email_key() != old_key {
                        changed.push(id.clone());
                    }
                    ids.push(id.as_str());
                    keys.push(owner.email_key());
                    emails.push(owner.primary_email);
                }
                exec(
                    &tx,
                    "UPDATE owner_access_owners o SET primary_email = e.email, email_key = e.key
                     FROM unnest($1::text[], $2::text[], $3::text[]) AS e(id, email, key)
                     WHERE o.id = e.id",
                    &[&ids, &emails, &keys],
                )
                .await?;
                tx.commit().await?;
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
        let key = delivered_key(sent_to);
        self.db
            .run(async {
                let mut c = self.db.client().await?;
                let tx = c.transaction().await?;
                let Some(found) = row(
                    &tx,
                    &format!(
                        "SELECT {OWNER_COLUMNS} FROM owner_access_owners WHERE id = $1 FOR UPDATE"
                    ),
                    &[&owner.as_str()],
                )
                .await?
                else {
                    return Ok(Marked::UnknownOwner);
                };
                let mut stored = read_owner(&found)?;
                if key.is_empty() || stored.email_key().as_deref() != Some(key.as_str()) {
                    return Ok(Marked::AddressChanged);
                }
                if !stored.is_registered() {
                    exec(
                        &tx,
                        "UPDATE owner_access_owners SET registered = true, registered_at = $2
                         WHERE id = $1",
                        &[&owner.as_str(), &ts(at)?],
                    )
                    .await?;
                    stored.registered = Some(Registered { at: Some(at) });
                }
                tx.commit().await?;
                Ok(Marked::Registered(Box::new(stored)))
            })
            .await
    }
}
