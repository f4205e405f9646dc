//! What a host with its own owner tables writes: an `OwnerRepository` over its own
//! SQLite schema (one the crate does not define, with its own `registered` column),
//! and the crate's `SqliteStore` for the workflow's state, in the same database file:
//! the store keeps to tables of its own (`owner_access_…`, with its version in
//! `owner_access_schema`) beside the host's.
//!
//! The host implements seven methods (and may add `shared_email_holders`, to count
//! holders in SQL, and `community_owner_ids`, to read only ids); drafts, batches, claims, tokens and the activity feed are
//! the store's. The example proves the adapter with the directory suite of the
//! conformance module (`testing::directory_conformance`, whose seeding callback writes
//! each check's owners into the host's tables), sends a batch end to end, shows the
//! roster (the host's units joined with the store's invitation states: the invited
//! owners show as invited, though the host's table has no column for it), redeems one
//! link and reads the host's `registered` column back.
//!
//! ```sh
//! cargo run --example custom_repository --features testing,sqlite
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use owner_access::domain::{
    Community, CommunityId, Owner, OwnerId, PropertyId, Registered, Timestamp, delivered_key,
};
use owner_access::eligibility::{AccessFilter, OwnerFilter};
use owner_access::prelude::*;
use owner_access::repository::{EmailEdit, EmailHolder, Marked, RepoResult, RepositoryError};
use owner_access::token::token_from_link;
use owner_access::{InMemoryTransport, OwnerAccess, Selection, SqliteStore, async_trait};
use rusqlite::{Connection, OptionalExtension, params};

/// The host's schema: its names, its columns. The crate never sees this SQL.
const HOST_SCHEMA: &str = "
CREATE TABLE associations (
    code        TEXT PRIMARY KEY NOT NULL,
    title       TEXT NOT NULL,
    board_email TEXT
);
CREATE TABLE units (
    unit_id       TEXT PRIMARY KEY NOT NULL,
    association   TEXT NOT NULL REFERENCES associations (code),
    unit_label    TEXT NOT NULL,
    given_name    TEXT NOT NULL,
    family_name   TEXT NOT NULL,
    street        TEXT NOT NULL DEFAULT '',
    email         TEXT,
    -- The host's own flag: the portal shows registered owners their account.
    registered    INTEGER NOT NULL DEFAULT 0 CHECK (registered IN (0, 1)),
    registered_at INTEGER
);
CREATE INDEX units_by_association ON units (association);
";

/// The host's owners, read and written through its own connection.
///
/// rusqlite is synchronous; the calls here are short, so they run inline under a
/// mutex. A host with a busy database would run them on a blocking pool or use its
/// async driver.
struct HostDirectory {
    db: Mutex<Connection>,
}

impl HostDirectory {
    fn open(path: &Path) -> rusqlite::Result<Self> {
        let db = Connection::open(path)?;
        // The crate's store writes to the same file: wait for its write lock, as it
        // waits for ours.
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(Self { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl fmt::Display for HostDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("host units table")
    }
}

/// The host's errors, named as the directory's.
fn failed(e: rusqlite::Error) -> RepositoryError {
    RepositoryError::Backend {
        store: "host units table".into(),
        source: Box::new(e),
    }
}

fn bad(e: impl fmt::Display) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(e.to_string().into())
}

const UNIT_COLUMNS: &str = "unit_id, association, unit_label, given_name, family_name, street, \
                            email, registered, registered_at";

fn read_unit(r: &rusqlite::Row<'_>) -> rusqlite::Result<Owner> {
    let id = OwnerId::new(r.get::<_, String>(0)?).map_err(bad)?;
    let community = CommunityId::new(r.get::<_, String>(1)?).map_err(bad)?;
    let property = PropertyId::new(r.get::<_, String>(2)?).map_err(bad)?;
    let mut owner = Owner::new(
        id,
        community,
        property,
        r.get::<_, String>(3)?,
        r.get::<_, String>(4)?,
    )
    .with_property_address(r.get::<_, String>(5)?);
    owner.primary_email = r.get(6)?;
    if r.get::<_, bool>(7)? {
        let at = r
            .get::<_, Option<i64>>(8)?
            .map(Timestamp::from_unix_seconds);
        owner.registered = Some(Registered { at });
    }
    Ok(owner)
}

fn read_association(r: &rusqlite::Row<'_>) -> rusqlite::Result<Community> {
    let id = CommunityId::new(r.get::<_, String>(0)?).map_err(bad)?;
    let mut community = Community::new(id, r.get::<_, String>(1)?);
    if let Some(board) = r.get::<_, Option<String>>(2)? {
        community = community.with_reply_to(board.parse().map_err(bad)?);
    }
    Ok(community)
}

#[async_trait]
impl OwnerRepository for HostDirectory {
    async fn community(&self, id: &CommunityId) -> RepoResult<Option<Community>> {
        self.db()
            .query_row(
                "SELECT code, title, board_email FROM associations WHERE code = ?1",
                [id.as_str()],
                read_association,
            )
            .optional()
            .map_err(failed)
    }

    async fn communities(&self) -> RepoResult<Vec<Community>> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT code, title, board_email FROM associations")
            .map_err(failed)?;
        let rows = stmt.query_map([], read_association).map_err(failed)?;
        rows.collect::<Result<_, _>>().map_err(failed)
    }

    async fn owners(&self, ids: &[OwnerId]) -> RepoResult<Vec<Owner>> {
        let db = self.db();
        let mut stmt = db
            .prepare_cached(&format!(
                "SELECT {UNIT_COLUMNS} FROM units WHERE unit_id = ?1"
            ))
            .map_err(failed)?;
        let mut owners = Vec::new();
        for id in ids {
            if let Some(o) = stmt
                .query_row([id.as_str()], read_unit)
                .optional()
                .map_err(failed)?
            {
                owners.push(o);
            }
        }
        Ok(owners)
    }

    async fn community_owners(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<Owner>> {
        let db = self.db();
        let mut stmt = db
            .prepare(&format!(
                "SELECT {UNIT_COLUMNS} FROM units WHERE association = ?1"
            ))
            .map_err(failed)?;
        let rows = stmt
            .query_map([community.as_str()], read_unit)
            .map_err(failed)?;
        let owners: Vec<Owner> = rows.collect::<Result<_, _>>().map_err(failed)?;
        Ok(owners
            .into_iter()
            .filter(|o| filter.matches_owner(o))
            .collect())
    }

    /// The holders by the crate's `delivered_key` (version
    /// `owner_access::domain::DELIVERED_KEY_VERSION`), worked out here over every
    /// address. A host with many owners keeps the key in an indexed column, notes the
    /// version it was made with, and computes the keys again when it changes.
    async fn email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        let wanted: HashSet<String> = keys.iter().map(|k| delivered_key(k)).collect();
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT unit_id, unit_label, email FROM units WHERE email IS NOT NULL")
            .map_err(failed)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(failed)?;
        let mut holders = Vec::new();
        for row in rows {
            let (id, label, email) = row.map_err(failed)?;
            let key = delivered_key(&email);
            if !key.is_empty() && wanted.contains(&key) {
                holders.push(EmailHolder {
                    key,
                    owner: OwnerId::new(id).map_err(|e| failed(bad(e)))?,
                    property: PropertyId::new(label).map_err(|e| failed(bad(e)))?,
                });
            }
        }
        Ok(holders)
    }

    async fn update_emails(&self, edits: &[EmailEdit]) -> RepoResult<Vec<OwnerId>> {
        let mut db = self.db();
        let tx = db.transaction().map_err(failed)?;
        // Every unit's address by key, to check uniqueness with the edits applied.
        let mut current: HashMap<String, Option<String>> = HashMap::new();
        {
            let mut stmt = tx
                .prepare("SELECT unit_id, email FROM units")
                .map_err(failed)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
                })
                .map_err(failed)?;
            for row in rows {
                let (id, email) = row.map_err(failed)?;
                current.insert(id, email);
            }
        }
        let mut last: BTreeMap<&OwnerId, &EmailEdit> = BTreeMap::new();
        for edit in edits {
            if !current.contains_key(edit.owner.as_str()) {
                return Err(RepositoryError::NotFound {
                    what: "owner",
                    id: edit.owner.to_string(),
                });
            }
            last.insert(&edit.owner, edit);
        }
        let key_of = |e: &Option<String>| e.as_deref().map(delivered_key).filter(|k| !k.is_empty());
        let mut taken: HashMap<String, &OwnerId> = HashMap::new();
        for (owner, edit) in &last {
            let Some(key) = key_of(&edit.email) else {
                continue;
            };
            if taken.insert(key.clone(), owner).is_some() {
                return Err(RepositoryError::Precondition {
                    message: format!("two edited units would share `{key}`"),
                });
            }
        }
        for (id, email) in &current {
            if last.keys().any(|o| o.as_str() == id) {
                continue;
            }
            if let Some(key) = key_of(email).filter(|k| taken.contains_key(k)) {
                return Err(RepositoryError::Precondition {
                    message: format!("`{key}` is held by unit `{id}`"),
                });
            }
        }
        let mut changed = Vec::new();
        for (owner, edit) in last {
            if key_of(&current[owner.as_str()]) != key_of(&edit.email) {
                changed.push(owner.clone());
            }
            tx.execute(
                "UPDATE units SET email = ?2 WHERE unit_id = ?1",
                params![owner.as_str(), edit.email],
            )
            .map_err(failed)?;
        }
        tx.commit().map_err(failed)?;
        Ok(changed)
    }

    async fn mark_registered(
        &self,
        owner: &OwnerId,
        sent_to: &str,
        at: Timestamp,
    ) -> RepoResult<Marked> {
        let mut db = self.db();
        let tx = db.transaction().map_err(failed)?;
        let stored = tx
            .query_row(
                &format!("SELECT {UNIT_COLUMNS} FROM units WHERE unit_id = ?1"),
                [owner.as_str()],
                read_unit,
            )
            .optional()
            .map_err(failed)?;
        let Some(mut stored) = stored else {
            return Ok(Marked::UnknownOwner);
        };
        let key = delivered_key(sent_to);
        if key.is_empty() || stored.email_key().as_deref() != Some(key.as_str()) {
            return Ok(Marked::AddressChanged);
        }
        if !stored.is_registered() {
            tx.execute(
                "UPDATE units SET registered = 1, registered_at = ?2 WHERE unit_id = ?1",
                params![owner.as_str(), at.unix_seconds()],
            )
            .map_err(failed)?;
            tx.commit().map_err(failed)?;
            stored.registered = Some(Registered {
                at: Some(Timestamp::from_unix_seconds(at.unix_seconds())),
            });
        }
        Ok(Marked::Registered(Box::new(stored)))
    }
}

/// The host application's own writes: its screens put associations and units in its
/// tables. (The crate's records are only the shape the test data comes in.)
fn write_host(path: &Path, communities: &[Community], owners: &[Owner]) -> rusqlite::Result<()> {
    let db = Connection::open(path)?;
    db.execute_batch(HOST_SCHEMA)?;
    for c in communities {
        db.execute(
            "INSERT INTO associations (code, title, board_email) VALUES (?1, ?2, ?3)",
            params![
                c.id.as_str(),
                c.name,
                c.reply_to.as_ref().map(ToString::to_string)
            ],
        )?;
    }
    for o in owners {
        let registered_at = o.registered.map(|r| r.at.map(Timestamp::unix_seconds));
        db.execute(
            "INSERT INTO units (unit_id, association, unit_label, given_name, family_name,
                                street, email, registered, registered_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                o.id.as_str(),
                o.community.as_str(),
                o.property.as_str(),
                o.first_name,
                o.last_name,
                o.property_address,
                o.primary_email,
                registered_at.is_some(),
                registered_at.flatten(),
            ],
        )?;
    }
    Ok(())
}

/// The demo's association and units.
fn demo(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let community = CommunityId::new("cedar-court")?;
    let units = [
        (
            "u-1",
            "1A",
            "Ann",
            "Lee",
            Some("ann.lee@example.org"),
            false,
        ),
        (
            "u-2",
            "1B",
            "Bo",
            "Chen",
            Some("bo.chen@example.org"),
            false,
        ),
        ("u-3", "2A", "Cy", "Diaz", None, false),
        ("u-4", "2B", "Di", "Eze", Some("di.eze@example.org"), true),
    ];
    let mut owners = Vec::new();
    for (id, label, given, family, email, registered) in units {
        let mut owner = Owner::new(
            OwnerId::new(id)?,
            community.clone(),
            PropertyId::new(label)?,
            given,
            family,
        )
        .with_property_address(format!("{label} Cedar Court"));
        owner.primary_email = email.map(str::to_owned);
        if registered {
            owner.registered = Some(Registered { at: None });
        }
        owners.push(owner);
    }
    let association = Community::new(community, "Cedar Court HOA")
        .with_reply_to("board@cedar.example.org".parse()?);
    write_host(path, &[association], &owners)?;
    Ok(())
}

/// The registration token in a message's text part (what the owner's click carries).
fn link_token(eml: &[u8]) -> Option<String> {
    fn text(part: &mailparse::ParsedMail<'_>) -> Option<String> {
        if part.ctype.mimetype == "text/plain" {
            return part.get_body().ok();
        }
        part.subparts.iter().find_map(text)
    }
    let text = text(&mailparse::parse_mail(eml).ok()?)?;
    token_from_link(&text).map(str::to_owned)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;

    // First, the proof: the directory checks of the conformance suite, each on a fresh
    // host database that the host's own code fills with the check's seed.
    let made = std::sync::atomic::AtomicUsize::new(0);
    let seeds = dir.path();
    owner_access::testing::directory_conformance(|seed| {
        let n = made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = seeds.join(format!("suite-{n}.db"));
        async move {
            write_host(&path, &seed.communities, &seed.owners).expect("seeding the host tables");
            HostDirectory::open(&path).expect("opening the host database")
        }
    })
    .await
    .map_err(|failures| format!("the directory suite failed: {failures:#?}"))?;
    println!(
        "directory suite: {} checks passed over the host's schema",
        owner_access::testing::DIRECTORY_CHECKS.len()
    );

    // One database: the host's tables, and the crate's store beside them (it creates
    // its own tables on open and never touches the host's).
    let host_db = dir.path().join("host.db");
    demo(&host_db)?;
    let store = Arc::new(SqliteStore::open(&host_db).await?);
    let directory = Arc::new(HostDirectory::open(&host_db)?);
    let tables: Vec<String> = directory
        .db()
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    println!("one database: {}", tables.join(", "));
    assert!(
        tables.iter().any(|t| t == "units") && tables.iter().any(|t| t == "owner_access_tokens"),
        "the host's table and the store's in one file"
    );
    let transport = Arc::new(InMemoryTransport::new());
    let service = OwnerAccess::builder_with(directory.clone(), store, transport.clone())
        .sender("Cedar Court Portal <no-reply@cedar.example.org>")
        .portal_url("https://portal.cedar.example.org/register")
        .build()?;

    let community = CommunityId::new("cedar-court")?;
    let roster = service
        .roster(&community, &OwnerFilter::unregistered_with_email())
        .await?;
    let invite = service
        .compose(&community, &Selection::all_eligible(&roster))
        .await?;
    let review = service.review(&invite).await?;
    let report = service.send(review).await?;
    println!(
        "sent {} of {} (batch {:?}), {} excluded",
        report.sent,
        report.recipients,
        report.batch,
        report.excluded.len()
    );
    assert_eq!(
        report.sent, 2,
        "Ann and Bo have addresses and are unregistered"
    );

    // The roster joins the host's units with the store's invitation states: Ann and
    // Bo show as invited, though the host's table knows nothing of invitations.
    let roster = service.roster(&community, &OwnerFilter::all()).await?;
    for row in &roster.rows {
        println!(
            "roster: {} {:?}, invited {} time(s)",
            row.owner.full_name(),
            row.state,
            row.invitation.map_or(0, |i| i.count)
        );
    }
    let c = roster.counts;
    println!(
        "roster after the send: not invited {}, invited {}, expired {}, registered {}",
        c.not_invited, c.invited, c.expired, c.registered
    );
    assert_eq!(
        (c.not_invited, c.invited, c.registered),
        (1, 2, 1),
        "Ann and Bo invited, Cy not, Di registered"
    );
    let invited_tab = service
        .roster(
            &community,
            &OwnerFilter::all().with_access(AccessFilter::Invited),
        )
        .await?;
    let again = service.compose_resend_to_invited(&community).await?;
    println!(
        "invited tab: {} owners; resend to invited selects {}",
        invited_tab.rows.len(),
        again.selection.len()
    );
    assert_eq!((invited_tab.rows.len(), again.selection.len()), (2, 2));

    let messages = transport.messages();
    let ann = messages
        .iter()
        .find(|m| m.envelope.to.as_str() == "ann.lee@example.org")
        .ok_or("no message to Ann")?;
    let token = link_token(&ann.bytes).ok_or("no link in Ann's message")?;
    let registration = service.redeem(&token).await?;
    let column: bool = Connection::open(&host_db)?.query_row(
        "SELECT registered FROM units WHERE unit_id = 'u-1'",
        [],
        |r| r.get(0),
    )?;
    println!(
        "redeemed: {} is registered; host column units.registered = {column}",
        registration.owner.full_name()
    );
    assert!(column, "the redeem set the host's own column");
    println!("host methods implemented: 7 required (OwnerRepository), 0 of 2 optional");
    Ok(())
}
