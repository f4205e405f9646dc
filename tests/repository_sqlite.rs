//! `SqliteRepository` on real files in a temp dir: the conformance suite (directly and
//! through trait objects), reopening, races between handles of one file, tokens never
//! stored in the clear, refusing corrupt or newer files and ones where a name the crate
//! needs is taken without touching them, and a host's file getting the crate's tables.
#![cfg(all(feature = "sqlite", feature = "testing"))]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use owner_access::adapters::sqlite::SqliteRepository;
use owner_access::domain::{
    ActivityEntry, ActivityKind, Community, CommunityId, Owner, OwnerId, Page, PropertyId,
};
use owner_access::eligibility::OwnerFilter;
use owner_access::invite::Attachment;
use owner_access::prelude::*;
use owner_access::repository::RepositoryError;
use owner_access::testing::{Failure, repository_conformance};
use owner_access::token::token_from_link;
use owner_access::{
    Clock, InMemoryTransport, OwnerAccess, RunControl, Selection, SendOptions, StopSignal,
    SystemClock,
};

fn report(failures: Vec<Failure>) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fresh database file in a temp dir kept alive for the whole test binary.
fn fresh_path() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    dir.path().join(format!(
        "conformance-{}.db",
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_suite_passes_directly() {
    repository_conformance(|| async { SqliteRepository::open(fresh_path()).await.unwrap() })
        .await
        .unwrap_or_else(|f| panic!("{}", report(f)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_suite_passes_through_arc_dyn() {
    repository_conformance(|| async {
        Arc::new(SqliteRepository::open(fresh_path()).await.unwrap()) as Arc<dyn OwnerStorage>
    })
    .await
    .unwrap_or_else(|f| panic!("{}", report(f)));
}

#[tokio::test]
async fn repository_suite_passes_on_a_current_thread_runtime() {
    repository_conformance(|| async { SqliteRepository::open(fresh_path()).await.unwrap() })
        .await
        .unwrap_or_else(|f| panic!("{}", report(f)));
}

// ----- Fixtures ------------------------------------------------------------------------

const PORTAL: &str = "https://portal.example.com/register";

fn community() -> CommunityId {
    CommunityId::new("maple-grove").unwrap()
}

fn owners(n: usize) -> Vec<Owner> {
    (0..n)
        .map(|i| {
            Owner::new(
                OwnerId::new(format!("o{i:05}")).unwrap(),
                community(),
                PropertyId::new(format!("unit-{i}")).unwrap(),
                format!("First{i}"),
                format!("Last{i}"),
            )
            .with_property_address(format!("{i} Elm Street"))
            .with_primary_email(format!("owner{i}@example.org"))
        })
        .collect()
}

/// A database with the community and `n` eligible owners.
async fn seeded(path: &Path, n: usize) -> SqliteRepository {
    let repo = SqliteRepository::open(path).await.unwrap();
    repo.upsert_community(&Community::new(community(), "Maple Grove HOA"))
        .await
        .unwrap();
    repo.upsert_owners(&owners(n), SystemClock.now())
        .await
        .unwrap();
    repo
}

fn service(repo: &SqliteRepository, transport: &Arc<InMemoryTransport>) -> OwnerAccess {
    OwnerAccess::builder(Arc::new(repo.clone()), transport.clone())
        .sender("Owner Portal <no-reply@example.com>")
        .portal_url(PORTAL)
        .send_options(SendOptions {
            concurrency: 4,
            ..SendOptions::default()
        })
        .build()
        .unwrap()
}

/// The registration token in a captured message's text part (at any depth).
fn token_in(bytes: &[u8]) -> String {
    fn text(part: &mailparse::ParsedMail<'_>) -> Option<String> {
        if part.ctype.mimetype == "text/plain" {
            return part.get_body().ok();
        }
        part.subparts.iter().find_map(text)
    }
    let message = mailparse::parse_mail(bytes).unwrap();
    let text = text(&message).unwrap();
    token_from_link(&text)
        .expect("a registration link")
        .to_owned()
}

/// Sends the invitation to every eligible owner; returns the batch's report.
async fn send_to_all(service: &OwnerAccess, control: RunControl) -> owner_access::SendReport {
    let roster = service
        .roster(&community(), &OwnerFilter::unregistered_with_email())
        .await
        .unwrap();
    let invite = service
        .compose(&community(), &Selection::all_eligible(&roster))
        .await
        .unwrap()
        .with_attachment(Attachment::new(
            "welcome.pdf",
            "application/pdf",
            vec![0u8, 1, 2, 255, 0, 37],
        ));
    let review = service.review(&invite).await.unwrap();
    service.send_with(review, control).await.unwrap()
}

/// A control whose stop signal is already given: the batch is stored, nothing sent.
fn stopped_control() -> RunControl {
    let stop = StopSignal::new();
    stop.stop();
    RunControl::new().with_stop(stop)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// ----- Durability ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_after_drop_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("owners.db");
    let transport = Arc::new(InMemoryTransport::new());
    let repo = seeded(&path, 5).await;
    let service = service(&repo, &transport);

    let roster = service
        .roster(&community(), &OwnerFilter::unregistered_with_email())
        .await
        .unwrap();
    let draft_invite = service
        .compose(&community(), &Selection::all_eligible(&roster))
        .await
        .unwrap()
        .with_subject("Draft subject")
        .with_attachment(Attachment::new("map.png", "image/png", vec![0u8; 3000]))
        .with_attachment(Attachment::new(
            "rules.pdf",
            "application/pdf",
            b"%PDF\x00\xff".to_vec(),
        ));
    let draft = service.save_draft(&draft_invite).await.unwrap();
    let report = send_to_all(&service, RunControl::new()).await;
    assert_eq!(report.sent, 5);
    let batch = report.batch.unwrap();
    let token = token_in(&transport.messages()[0].bytes);
    let registration = service.redeem(&token).await.unwrap();

    let before = (
        repo.community(&community()).await.unwrap(),
        repo.community_owners(&community(), &OwnerFilter::all())
            .await
            .unwrap(),
        repo.draft(&draft).await.unwrap(),
        repo.batch(&batch).await.unwrap(),
        repo.deliveries(&batch).await.unwrap(),
        repo.activity(&community(), Page::first(100)).await.unwrap(),
        repo.token(&owner_access::token::hash_token(&token))
            .await
            .unwrap(),
    );
    assert!(before.2.as_ref().unwrap().invite.attachments.len() == 2);
    assert!(before.3.as_ref().unwrap().invite.attachments[0].bytes == [0u8, 1, 2, 255, 0, 37]);
    drop(service);
    drop(repo);

    let reopened = SqliteRepository::open(&path).await.unwrap();
    let mut after_owners = reopened
        .community_owners(&community(), &OwnerFilter::all())
        .await
        .unwrap();
    let mut before_owners = before.1.clone();
    after_owners.sort_by(|a, b| a.id.cmp(&b.id));
    before_owners.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(reopened.community(&community()).await.unwrap(), before.0);
    assert_eq!(after_owners, before_owners);
    assert!(
        after_owners
            .iter()
            .any(|o| o.id == registration.owner.id && o.is_registered())
    );
    assert_eq!(reopened.draft(&draft).await.unwrap(), before.2);
    assert_eq!(reopened.batch(&batch).await.unwrap(), before.3);
    assert_eq!(reopened.deliveries(&batch).await.unwrap(), before.4);
    let feed = reopened
        .activity(&community(), Page::first(100))
        .await
        .unwrap();
    assert_eq!(feed, before.5);
    assert!(
        matches!(feed[0].kind, ActivityKind::Registered { .. }),
        "newest first"
    );
    assert_eq!(
        reopened
            .token(&owner_access::token::hash_token(&token))
            .await
            .unwrap(),
        before.6
    );
}

#[tokio::test]
async fn activity_with_one_timestamp_is_newest_appended_first_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feed.db");
    let repo = SqliteRepository::open(&path).await.unwrap();
    let at = SystemClock.now();
    for changed in 0..5 {
        repo.append_activity(&ActivityEntry {
            community: community(),
            at,
            kind: ActivityKind::MassEdit { changed },
        })
        .await
        .unwrap();
    }
    drop(repo);
    let repo = SqliteRepository::open(&path).await.unwrap();
    let feed = repo.activity(&community(), Page::first(3)).await.unwrap();
    let order: Vec<usize> = feed
        .iter()
        .map(|e| match e.kind {
            ActivityKind::MassEdit { changed } => changed,
            _ => usize::MAX,
        })
        .collect();
    assert_eq!(order, [4, 3, 2]);
    let next = repo
        .activity(&community(), Page::first(3).next())
        .await
        .unwrap();
    assert_eq!(next.len(), 2);
}

// ----- Races between handles of one file -----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_redeems_of_one_token_through_two_handles_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.db");
    let transport = Arc::new(InMemoryTransport::new());
    let repo_a = seeded(&path, 20).await;
    let repo_b = SqliteRepository::open(&path).await.unwrap();
    let service_a = service(&repo_a, &transport);
    let service_b = service(&repo_b, &transport);
    assert_eq!(send_to_all(&service_a, RunControl::new()).await.sent, 20);

    for message in transport.messages() {
        let token = token_in(&message.bytes);
        let (a, b) = tokio::join!(
            tokio::spawn({
                let s = service_a.clone();
                let t = token.clone();
                async move { s.redeem(&t).await.is_ok() }
            }),
            tokio::spawn({
                let s = service_b.clone();
                let t = token.clone();
                async move { s.redeem(&t).await.is_ok() }
            }),
        );
        let wins = usize::from(a.unwrap()) + usize::from(b.unwrap());
        assert_eq!(
            wins, 1,
            "exactly one redeem of {:?} wins",
            message.envelope.to
        );
    }
    let registered = repo_b
        .community_owners(
            &community(),
            &OwnerFilter::all().with_access(owner_access::eligibility::AccessFilter::Registered),
        )
        .await
        .unwrap();
    assert_eq!(registered.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sends_of_one_batch_at_once_never_send_an_owner_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two-senders.db");
    // More owners than one claim takes (256), so both senders get some.
    let n = 1000;
    let repo_a = seeded(&path, n).await;
    let repo_b = SqliteRepository::open(&path).await.unwrap();
    let latency = std::time::Duration::from_millis(5);
    let transport_a = Arc::new(InMemoryTransport::new().with_latency(latency));
    let transport_b = Arc::new(InMemoryTransport::new().with_latency(latency));
    let service_a = service(&repo_a, &transport_a);
    let service_b = service(&repo_b, &transport_b);

    // The batch is stored, nothing sent; then two handles resume it at once.
    let stored = send_to_all(&service_a, stopped_control()).await;
    assert_eq!((stored.sent, stored.pending), (0, n));
    let batch = stored.batch.unwrap();
    // One task drives both runs (the engine's futures are not `Send` to spawn), but
    // each handle's SQL runs on its own blocking thread and connection, so the two
    // runs claim against each other through the file.
    let (a, b) = tokio::join!(service_a.resume(&batch), service_b.resume(&batch));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut to: Vec<String> = transport_a
        .messages()
        .into_iter()
        .chain(transport_b.messages())
        .map(|m| m.envelope.to.to_string())
        .collect();
    assert!(
        !transport_a.is_empty() && !transport_b.is_empty(),
        "both senders took part: {} and {}",
        transport_a.len(),
        transport_b.len()
    );
    to.sort();
    let total = to.len();
    to.dedup();
    assert_eq!(total, to.len(), "no owner got two messages");
    assert_eq!(total, n, "every owner got one");
    assert!(a.failed.is_empty() && b.failed.is_empty());
    let counts = repo_a.delivery_counts(&batch).await.unwrap();
    assert_eq!((counts.sent, counts.pending, counts.claimed), (n, 0, 0));
}

// ----- Tokens are stored only as hashes -----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tokens_never_reach_the_database_files() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    let transport = Arc::new(InMemoryTransport::new());
    let repo = seeded(&path, 30).await;
    let service = service(&repo, &transport);
    assert_eq!(send_to_all(&service, RunControl::new()).await.sent, 30);
    let tokens: Vec<String> = transport
        .messages()
        .iter()
        .map(|m| token_in(&m.bytes))
        .collect();
    assert_eq!(tokens.len(), 30);

    let scan = |label: &str| {
        let files: Vec<Vec<u8>> = ["", "-wal", "-journal"]
            .iter()
            .filter_map(|suffix| {
                let mut name = path.clone().into_os_string();
                name.push(suffix);
                std::fs::read(name).ok()
            })
            .collect();
        assert!(!files.is_empty());
        for token in &tokens {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .unwrap();
            let hash = owner_access::token::hash_token(token);
            for bytes in &files {
                assert!(
                    !contains(bytes, token.as_bytes()),
                    "{label}: a token in the clear"
                );
                assert!(!contains(bytes, &raw), "{label}: a token's raw bytes");
            }
            // The scan looks where the data is: the hash is stored.
            assert!(
                files.iter().any(|bytes| contains(bytes, &hash.0)),
                "{label}: the token's hash is stored"
            );
        }
    };
    // While open (the WAL holds the recent writes), then after closing (checkpointed).
    scan("open");
    drop(service);
    drop(repo);
    scan("closed");
}

// ----- Files that are not ours --------------------------------------------------------

fn corrupt_message(result: Result<SqliteRepository, RepositoryError>) -> String {
    match result {
        Err(RepositoryError::Corrupt { message }) => message,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_refused_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    let bytes: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&path, &bytes).unwrap();
    let message = corrupt_message(SqliteRepository::open(&path).await);
    assert!(message.contains("garbage.db"), "{message}");
    assert!(
        message.contains("not a usable owner-access database"),
        "{message}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[tokio::test]
async fn a_damaged_owner_access_file_is_refused_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.db");
    drop(seeded(&path, 10).await);
    let mut bytes = std::fs::read(&path).unwrap();
    // Page 1 past the 100-byte header holds the schema table: scribble over it.
    for b in &mut bytes[100..2000] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let message = corrupt_message(SqliteRepository::open(&path).await);
    assert!(message.contains("damaged.db"), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

/// A file of another application is not refused for having tables of its own: the
/// crate's prefixed tables go in beside them, and its tables, rows, `application_id`
/// and `user_version` stay as they were.
#[tokio::test]
async fn another_applications_database_gets_the_crates_tables_beside_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accounting.db");
    let invoices = || -> Vec<(i64, i64)> {
        rusqlite::Connection::open(&path)
            .unwrap()
            .prepare("SELECT id, amount FROM invoices ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let pragmas = || -> (i64, i64) {
        let conn = rusqlite::Connection::open(&path).unwrap();
        (
            conn.query_row("PRAGMA application_id", [], |r| r.get(0))
                .unwrap(),
            conn.query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap(),
        )
    };
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA application_id = 0x41434354; PRAGMA user_version = 3;
             CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount INTEGER);
             INSERT INTO invoices (amount) VALUES (100), (250);",
        )
        .unwrap();
    }
    let before = (invoices(), pragmas());
    let repo = seeded(&path, 3).await;
    assert_eq!(
        repo.community_owners(&community(), &OwnerFilter::all())
            .await
            .unwrap()
            .len(),
        3
    );
    drop(repo);
    assert_eq!((invoices(), pragmas()), before);
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.db");
    drop(seeded(&path, 1).await);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        conn.pragma_update(None, "journal_mode", "DELETE").unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let message = corrupt_message(SqliteRepository::open(&path).await);
    assert!(message.contains("newer owner-access"), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

/// The names in a folder, sorted.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A WAL-mode file that is refused (a name the crate needs taken, a newer schema)
/// gets no `-wal` or `-shm` beside it: a read-only connection would create both, so
/// the file is probed as immutable.
#[tokio::test]
async fn a_refused_wal_file_gets_no_files_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("accounting.db");
    {
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY);
             CREATE VIEW owner_access_owners AS SELECT id FROM invoices;",
        )
        .unwrap();
    }
    let newer = dir.path().join("newer.db");
    drop(seeded(&newer, 1).await);
    {
        let conn = rusqlite::Connection::open(&newer).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    assert_eq!(names_in(dir.path()), ["accounting.db", "newer.db"]);
    let bytes = (
        std::fs::read(&foreign).unwrap(),
        std::fs::read(&newer).unwrap(),
    );
    let taken = SqliteRepository::open(&foreign).await;
    assert!(
        matches!(&taken, Err(RepositoryError::NameTaken { name, .. }) if name == "owner_access_owners"),
        "{taken:?}"
    );
    let message = corrupt_message(SqliteRepository::open(&newer).await);
    assert!(message.contains("newer owner-access"), "{message}");
    assert_eq!(names_in(dir.path()), ["accounting.db", "newer.db"]);
    assert_eq!(
        (
            std::fs::read(&foreign).unwrap(),
            std::fs::read(&newer).unwrap()
        ),
        bytes
    );
}

/// A refused file whose `-wal` is still there (its writer crashed) is read through it,
/// and the `-shm` that reading made is removed again.
#[tokio::test]
async fn a_refused_file_with_a_leftover_wal_keeps_only_what_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.db");
    drop(seeded(&path, 1).await);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    // A -wal with nothing to replay, as a crash before any write leaves it.
    std::fs::write(dir.path().join("newer.db-wal"), b"").unwrap();
    let message = corrupt_message(SqliteRepository::open(&path).await);
    assert!(message.contains("newer owner-access"), "{message}");
    assert_eq!(names_in(dir.path()), ["newer.db", "newer.db-wal"]);
}

#[tokio::test]
async fn a_missing_directory_is_unavailable_and_display_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let result = SqliteRepository::open(dir.path().join("no/such/dir/x.db")).await;
    assert!(
        matches!(result, Err(RepositoryError::Unavailable { .. })),
        "{result:?}"
    );
    let path = dir.path().join("named.db");
    let repo = SqliteRepository::open(&path).await.unwrap();
    assert!(repo.to_string().contains("named.db"));
    assert_eq!(repo.path(), path);
}

// ----- Set-based queries --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roster_runs_a_fixed_number_of_statements_whatever_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut per_roster = Vec::new();
    for n in [10, 2000] {
        let repo = seeded(&dir.path().join(format!("roster-{n}.db")), n).await;
        let service = service(&repo, &Arc::new(InMemoryTransport::new()));
        let before = repo.statement_count();
        let roster = service
            .roster(&community(), &OwnerFilter::all())
            .await
            .unwrap();
        assert_eq!(roster.rows.len(), n);
        assert!(roster.rows.iter().all(|r| r.eligibility.is_eligible()));
        per_roster.push(repo.statement_count() - before);
    }
    assert_eq!(per_roster[0], per_roster[1], "{per_roster:?}");
    // The community, the owed registrations, the owners, their invitation states (the
    // store's, joined in the service) and the shared addresses.
    assert!(per_roster[0] <= 5, "{per_roster:?}");
}

#[tokio::test]
async fn shared_addresses_are_stored_and_found_across_communities() {
    let dir = tempfile::tempdir().unwrap();
    let repo = seeded(&dir.path().join("shared.db"), 3).await;
    let other = Owner::new(
        OwnerId::new("elsewhere").unwrap(),
        CommunityId::new("oak-park").unwrap(),
        PropertyId::new("unit-9").unwrap(),
        "Bo",
        "Diaz",
    )
    .with_primary_email("  OWNER1@Example.org ");
    repo.upsert_owners(&[other], SystemClock.now())
        .await
        .unwrap();
    let mut holders = repo
        .email_holders(&["owner1@example.org".into(), "nobody@example.org".into()])
        .await
        .unwrap();
    holders.sort_by(|a, b| a.owner.cmp(&b.owner));
    let ids: Vec<&str> = holders.iter().map(|h| h.owner.as_str()).collect();
    assert_eq!(ids, ["elsewhere", "o00001"]);
}

// ----- What the schema enforces by itself ---------------------------------------------

#[tokio::test]
async fn the_schema_itself_refuses_a_second_live_invitation_a_duplicate_hash_and_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schema.db");
    let transport = Arc::new(InMemoryTransport::new());
    let repo = seeded(&path, 2).await;
    let report = send_to_all(&service(&repo, &transport), RunControl::new()).await;
    assert_eq!(report.sent, 2);
    let batch = report.batch.unwrap();
    drop(repo);

    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    let refused = |sql: &str| {
        let result = conn.execute_batch(sql);
        assert!(result.is_err(), "the schema accepted: {sql}");
        result.unwrap_err().to_string()
    };
    // A second live invitation for an owner who has one; a second open one of a batch.
    let e = refused(
        "INSERT INTO owner_access_invitations (owner, batch, state) VALUES ('o00000', 'other', 'live')",
    );
    assert!(e.contains("UNIQUE"), "{e}");
    let e = refused(&format!(
        "INSERT INTO owner_access_invitations (owner, batch, state) VALUES ('o00000', '{batch}', 'pending')"
    ));
    assert!(e.contains("UNIQUE"), "{e}");
    // A pending invitation of another batch coexists with the live one; a live token
    // cannot join it, and it cannot become live while the other is.
    conn.execute_batch(
        "INSERT INTO owner_access_invitations (owner, batch, state) VALUES ('o00000', 'newer', 'pending')",
    )
    .unwrap();
    let e = refused(
        "INSERT INTO owner_access_tokens (hash, invitation, issued_at, expires_at, state)
         SELECT randomblob(32), id, 0, 1, 'live' FROM owner_access_invitations
          WHERE owner = 'o00000' AND batch = 'newer'",
    );
    assert!(e.contains("live invitation"), "{e}");
    let e = refused(
        "UPDATE owner_access_invitations SET state = 'live' WHERE owner = 'o00000' AND batch = 'newer'",
    );
    assert!(e.contains("UNIQUE"), "{e}");
    // A token hash stored twice.
    let e = refused(
        "INSERT INTO owner_access_tokens (hash, invitation, issued_at, expires_at, state)
         SELECT hash, invitation, issued_at, expires_at, 'live' FROM owner_access_tokens LIMIT 1",
    );
    assert!(e.contains("UNIQUE"), "{e}");
    // A live token in a closed invitation; a revoked token made live again.
    conn.execute_batch(
        "UPDATE owner_access_invitations SET state = 'closed', closed_at = 1 WHERE owner = 'o00000'",
    )
    .unwrap();
    let e = refused(
        "INSERT INTO owner_access_tokens (hash, invitation, issued_at, expires_at, state)
         SELECT zeroblob(32), id, 0, 1, 'live' FROM owner_access_invitations WHERE owner = 'o00000' LIMIT 1",
    );
    assert!(e.contains("live invitation"), "{e}");
    let revoked: String = conn
        .query_row(
            "SELECT t.state FROM owner_access_tokens t JOIN owner_access_invitations i ON i.id = t.invitation
             WHERE i.owner = 'o00000'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        revoked, "revoked",
        "closing an invitation revokes its tokens"
    );
    refused(
        "UPDATE owner_access_tokens SET state = 'live', state_at = NULL
         WHERE invitation IN (SELECT id FROM owner_access_invitations WHERE owner = 'o00000')",
    );
    // A closed invitation never reopens.
    let e = refused(
        "UPDATE owner_access_invitations SET state = 'pending', closed_at = NULL WHERE owner = 'o00000'",
    );
    assert!(e.contains("only moves"), "{e}");
    // A second delivery for one (batch, owner).
    let e = refused(&format!(
        "INSERT INTO owner_access_deliveries (batch, owner, to_addr, state) VALUES ('{batch}', 'o00001', 'x@example.org', 'pending')"
    ));
    assert!(e.contains("UNIQUE") || e.contains("PRIMARY"), "{e}");
}
