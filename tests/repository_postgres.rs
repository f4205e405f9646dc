//! The PostgreSQL adapters against a real server: the conformance suites (directly
//! and through `Arc<dyn …>`), leases judged by the server's clock, concurrent
//! redeems and claims through separate pools, and a server that ends the pool's
//! connections mid-send.
//!
//! Needs a server: `OWNER_ACCESS_PG_URL=postgres://user@host:port/db cargo test
//! --all-features --test repository_postgres -- --include-ignored` (the default URL
//! is `postgres://postgres@127.0.0.1:5432/postgres`). Each test creates a database
//! of its own and drops it.

mod pg_support;

use std::sync::Arc;

use owner_access::OwnerStorage;
use owner_access::adapters::postgres::{PostgresDirectory, PostgresRepository};
use owner_access::repository::OwnerRepository;
use owner_access::testing::{directory_conformance, repository_conformance, seed_through_upserts};
use pg_support::TestDb;

const NEEDS: &str = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored";

fn report(failures: Vec<owner_access::testing::Failure>) -> String {
    failures
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn repository_conformance_directly() {
    let db = TestDb::create().await;
    let result = repository_conformance(|| async {
        PostgresRepository::connect(&db.fresh().await)
            .await
            .expect("connect")
    })
    .await;
    if let Err(failures) = result {
        panic!("{} failures:\n{}", failures.len(), report(failures));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn repository_conformance_through_arc_dyn() {
    let db = TestDb::create().await;
    let result = repository_conformance(|| async {
        let repo: Arc<dyn OwnerStorage> = Arc::new(
            PostgresRepository::connect(&db.fresh().await)
                .await
                .expect("connect"),
        );
        repo
    })
    .await;
    if let Err(failures) = result {
        panic!("{} failures:\n{}", failures.len(), report(failures));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn directory_conformance_directly_and_through_arc_dyn() {
    let db = TestDb::create().await;
    let direct = directory_conformance(|seed| {
        let db = &db;
        async move {
            let dir = PostgresDirectory::connect(&db.fresh().await)
                .await
                .expect("connect");
            seed_through_upserts(&dir, &seed).await.expect("seed");
            dir
        }
    })
    .await;
    if let Err(failures) = direct {
        panic!("{} failures:\n{}", failures.len(), report(failures));
    }
    let shared = directory_conformance(|seed| {
        let db = &db;
        async move {
            let dir = PostgresDirectory::connect(&db.fresh().await)
                .await
                .expect("connect");
            seed_through_upserts(&dir, &seed).await.expect("seed");
            let dir: Arc<dyn OwnerRepository> = Arc::new(dir);
            dir
        }
    })
    .await;
    if let Err(failures) = shared {
        panic!("{} failures:\n{}", failures.len(), report(failures));
    }
    let _ = NEEDS;
}

// ----- Beyond the suites: the server's clock, separate pools, a server that ends the
// pool's connections.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{PORTAL, fast_options, owner, t0};
use owner_access::adapters::postgres::LeaseClock;
use owner_access::domain::{
    ActivityEntry, ActivityKind, Batch, BatchId, Community, CommunityId, DeliveryOutcome,
    DeliveryState, Mailbox, NewBatch, OwnerId, SenderId, Timestamp, TokenHash, TokenRecord,
    TokenState,
};
use owner_access::invite::Invite;
use owner_access::prelude::*;
use owner_access::repository::{RedeemOutcome, RepositoryError};
use owner_access::transport::{Accepted, Envelope, TransportError};
use owner_access::{
    InMemoryTransport, MailTransport, ManualClock, OwnerAccess, Selection, SendOptions, StopReason,
    async_trait,
};

fn cid() -> CommunityId {
    CommunityId::new("c1").unwrap()
}

/// A batch of `owners` (`o0000`, `o0001`, …), built as the service would.
fn new_batch(id: &str, owners: usize) -> NewBatch {
    let ids: Vec<OwnerId> = (0..owners)
        .map(|i| OwnerId::new(format!("o{i:04}")).unwrap())
        .collect();
    let batch = BatchId::new(id).unwrap();
    let invite = Invite {
        community: cid(),
        selection: Selection::of(ids.clone()),
        subject: "Your owner portal".into(),
        text_body: Some("Register: {{link}}".into()),
        html_body: None,
        reply_to: None,
        summary_to: None,
        attachments: Vec::new(),
        draft: None,
        from: None,
        portal_url: None,
    };
    NewBatch {
        batch: Batch {
            id: batch.clone(),
            community: cid(),
            invite,
            sender: Mailbox {
                name: None,
                address: common::addr("no-reply@portal.example.com"),
            },
            portal_url: PORTAL.into(),
            token_ttl_seconds: 86_400,
            created_at: t0(),
            resend: false,
        },
        deliveries: ids
            .iter()
            .map(|o| (o.clone(), common::addr(&format!("{o}@example.org"))))
            .collect(),
        activity: ActivityEntry {
            community: cid(),
            at: t0(),
            kind: ActivityKind::BatchCreated {
                batch,
                recipients: owners,
                excluded: 0,
                resend: false,
            },
        },
    }
}

fn system_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn leases_are_judged_by_the_server_clock_whatever_the_callers_say() {
    let db = TestDb::create().await;
    let settings = db.fresh().await.lease_clock(LeaseClock::Server);
    let repo = PostgresRepository::connect(&settings).await.unwrap();
    repo.create_batch(&new_batch("b1", 3)).await.unwrap();
    let b1 = BatchId::new("b1").unwrap();
    let (a, b) = (SenderId::new("a").unwrap(), SenderId::new("b").unwrap());
    let lease = Duration::from_secs(2);
    // A caller whose clock reads 1970 claims: the lease is stamped with the server's
    // time, not the caller's.
    let long_ago = Timestamp::from_unix_seconds(0);
    let claimed = repo
        .claim_deliveries(&b1, &a, 2, lease, long_ago)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    for d in &claimed {
        let DeliveryState::Claimed { at, until, .. } = d.state else {
            panic!("claimed: {d:?}");
        };
        assert!(
            (at.unix_seconds() - system_now()).abs() <= 5,
            "at is the server's now: {at}"
        );
        assert_eq!(
            until.as_offset_date_time() - at.as_offset_date_time(),
            time::Duration::seconds(2),
            "until = at + lease"
        );
    }
    // A caller whose clock runs centuries ahead cannot take a lease that still runs.
    let far_ahead = Timestamp::from_unix_seconds(7_000_000_000);
    let taken = repo
        .claim_deliveries(&b1, &b, 10, lease, far_ahead)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1, "only the pending one: {taken:?}");
    let held = repo.held_claims(&b1, long_ago).await.unwrap();
    assert!(
        (held.now.unix_seconds() - system_now()).abs() <= 5,
        "the server's now"
    );
    // Renewing with a caller's clock of 1970 still gives the server's now + lease.
    let refused = repo
        .renew_claims(&b1, &a, &[claimed[0].owner.clone()], lease, long_ago)
        .await
        .unwrap();
    assert!(refused.is_empty());
    // Once the server's clock passes the unrenewed lease, another sender takes it
    // over, whatever its own clock says.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let over = repo
        .claim_deliveries(&b1, &b, 10, lease, long_ago)
        .await
        .unwrap();
    let owners: BTreeSet<&str> = over.iter().map(|d| d.owner.as_str()).collect();
    assert!(
        owners.contains(claimed[1].owner.as_str()),
        "taken over: {over:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn two_pools_redeeming_one_token_at_once_one_wins() {
    let db = TestDb::create().await;
    let settings = db.fresh().await;
    let first = PostgresRepository::connect(&settings).await.unwrap();
    let second = PostgresRepository::connect(&settings).await.unwrap();
    for round in 0..30u8 {
        let owner = OwnerId::new(format!("o{round}")).unwrap();
        let mut hashes = Vec::new();
        // Two live links of one owner (a message sent twice): redeeming either is
        // redeeming the owner's invitation.
        for copy in 0..2u8 {
            let hash = TokenHash([round.wrapping_mul(2).wrapping_add(copy); 32]);
            first
                .issue_token(&TokenRecord {
                    hash,
                    owner: owner.clone(),
                    batch: BatchId::new("b1").unwrap(),
                    issued_at: t0(),
                    expires_at: Timestamp::from_unix_seconds(t0().unix_seconds() + 86_400),
                    sent_to: format!("{owner}@example.org"),
                    state: TokenState::Live,
                })
                .await
                .unwrap();
            hashes.push(hash);
        }
        let at = Timestamp::from_unix_seconds(t0().unix_seconds() + 10);
        // Same token from both pools, or the owner's two tokens, alternately.
        let (h1, h2) = if round % 2 == 0 {
            (hashes[0], hashes[0])
        } else {
            (hashes[0], hashes[1])
        };
        let (x, y) = tokio::join!(first.redeem_token(&h1, at), second.redeem_token(&h2, at));
        let won = [x.unwrap(), y.unwrap()]
            .iter()
            .filter(|o| matches!(o, RedeemOutcome::Redeemed { .. }))
            .count();
        assert_eq!(won, 1, "round {round}: exactly one redeem wins");
        assert_eq!(
            first.owed_registrations().await.unwrap().len(),
            usize::from(round) + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn two_pools_claiming_one_batch_never_share_a_delivery() {
    let db = TestDb::create().await;
    let settings = db.fresh().await;
    let pools = [
        PostgresRepository::connect(&settings).await.unwrap(),
        PostgresRepository::connect(&settings).await.unwrap(),
    ];
    const OWNERS: usize = 2_000;
    pools[0]
        .create_batch(&new_batch("b1", OWNERS))
        .await
        .unwrap();
    let b1 = BatchId::new("b1").unwrap();
    let claimers = (0..8).map(|i| {
        let repo = &pools[i % 2];
        let b1 = &b1;
        async move {
            let sender = SenderId::new(format!("worker-{i}")).unwrap();
            let mut mine = Vec::new();
            loop {
                let got = repo
                    .claim_deliveries(b1, &sender, 25, Duration::from_secs(60), t0())
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|d| d.owner));
            }
        }
    });
    let mut seen: BTreeMap<OwnerId, usize> = BTreeMap::new();
    for mine in futures::future::join_all(claimers).await {
        for owner in mine {
            *seen.entry(owner).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), OWNERS, "every delivery claimed");
    assert!(seen.values().all(|n| *n == 1), "nobody claimed twice");
}

/// Delivers into an in-memory transport; after `kill_after` messages, takes the
/// test database down before answering: it stops accepting connections and ends
/// every one it has (what a server restart looks like to the pool), until the test
/// lets it accept them again.
struct KillingTransport {
    inner: InMemoryTransport,
    db_name: String,
    kill_after: usize,
    sent: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Display for KillingTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("killing transport")
    }
}

#[async_trait]
impl MailTransport for KillingTransport {
    async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<Accepted, TransportError> {
        let accepted = self.inner.send(envelope, message).await?;
        let n = self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n == self.kill_after {
            let client = admin_client().await;
            client
                .batch_execute(&format!(
                    "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
                    self.db_name
                ))
                .await
                .unwrap();
            let killed: i64 = client
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&self.db_name],
                )
                .await
                .unwrap()
                .get(0);
            assert!(killed > 0, "the pool had connections to end");
        }
        Ok(accepted)
    }
}

async fn admin_client() -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&pg_support::server_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn connections_ended_mid_send_stop_it_unavailable_and_resume_loses_nobody() {
    const OWNERS: usize = 120;
    let db = TestDb::create().await;
    let repo = Arc::new(
        PostgresRepository::connect(&db.fresh().await)
            .await
            .unwrap(),
    );
    repo.upsert_community(&Community::new(cid(), "Maple Grove HOA"))
        .await
        .unwrap();
    let owners: Vec<_> = (0..OWNERS)
        .map(|i| owner(&format!("e{i:03}"), Some(&format!("e{i:03}@example.org"))))
        .collect();
    repo.upsert_owners(&owners, t0()).await.unwrap();
    let transport = Arc::new(KillingTransport {
        inner: InMemoryTransport::new(),
        db_name: db.name.clone(),
        kill_after: 30,
        sent: Default::default(),
    });
    let clock = Arc::new(ManualClock::new(t0()));
    let options = SendOptions {
        concurrency: 2,
        outcome_group: 4,
        ..fast_options()
    };
    let service = OwnerAccess::builder(repo.clone(), transport.clone())
        .sender("Owner Portal <no-reply@portal.example.com>")
        .portal_url(PORTAL)
        .clock(clock.clone())
        .send_options(options.clone())
        .build()
        .unwrap();
    let selection: Selection = owners.iter().map(|o| o.id.clone()).collect();
    let review = service
        .review(&service.compose(&cid(), &selection).await.unwrap())
        .await
        .unwrap();
    let report = service.send(review).await.expect("a stop, not an error");
    let batch = report.batch.clone().expect("the report names the batch");
    match &report.stopped {
        Some(StopReason::StoreUnavailable { error, .. }) => {
            assert!(
                error.contains("PostgreSQL repository") && error.contains("is unavailable"),
                "names the store, unavailable: {error}"
            )
        }
        other => panic!("expected a store stop, got {other:?}: {report:?}"),
    }
    assert!(
        report.pending > 0,
        "stopped with deliveries pending: {report:?}"
    );
    // The server is back: the pool opens fresh connections; the stopped run's leases
    // run out.
    admin_client()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
            db.name
        ))
        .await
        .unwrap();
    clock.advance(options.claim_lease);
    let resumed = service.resume(&batch).await.unwrap();
    assert!(resumed.is_complete(), "{resumed:?}");
    let counts = repo.delivery_counts(&batch).await.unwrap();
    assert_eq!(
        counts.sent, OWNERS,
        "every delivery recorded sent: {counts:?}"
    );
    let mut ids: BTreeMap<OwnerId, Vec<String>> = BTreeMap::new();
    for m in transport.inner.messages() {
        let tag = m.envelope.tag.unwrap();
        if let Some(owner) = tag.owner {
            ids.entry(owner).or_default().push(tag.message_id);
        }
    }
    assert_eq!(ids.len(), OWNERS, "nobody lost");
    for (owner, copies) in &ids {
        assert!(copies.len() <= 2, "{owner} got {} copies", copies.len());
        assert!(
            copies.iter().all(|c| *c == copies[0]),
            "{owner}'s copies share a Message-ID"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn a_server_that_is_down_is_unavailable_with_its_cause() {
    // Port 1: nothing listens there.
    let err = PostgresRepository::connect(
        &owner_access::PostgresSettings::new(
            "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable",
        )
        .connect_timeout(Duration::from_secs(2)),
    )
    .await
    .expect_err("nothing listens on port 1");
    assert!(
        matches!(err, RepositoryError::Unavailable { .. }),
        "{err:?}"
    );
    let cause = std::error::Error::source(&err)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(!cause.is_empty(), "the cause is kept: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn six_pools_connecting_at_once_migrate_once() {
    let db = TestDb::create().await;
    let (settings, schema) = db.fresh_named().await;
    let connects = (0..6).map(|_| PostgresRepository::connect(&settings));
    for result in futures::future::join_all(connects).await {
        result.expect("every connect succeeds");
    }
    let client = db.client().await;
    let rows = client
        .query(
            &format!("SELECT part, version FROM {schema}.owner_access_schema ORDER BY part"),
            &[],
        )
        .await
        .unwrap();
    let parts: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(parts, vec![("directory".into(), 1), ("store".into(), 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn a_statement_past_its_time_out_is_unavailable_and_changes_nothing() {
    let db = TestDb::create().await;
    let (settings, schema) = db.fresh_named().await;
    let repo = PostgresRepository::connect(&settings.statement_timeout(Duration::from_millis(300)))
        .await
        .unwrap();
    let hash = TokenHash([7; 32]);
    repo.issue_token(&TokenRecord {
        hash,
        owner: OwnerId::new("o1").unwrap(),
        batch: BatchId::new("b1").unwrap(),
        issued_at: t0(),
        expires_at: Timestamp::from_unix_seconds(t0().unix_seconds() + 86_400),
        sent_to: "o1@example.org".into(),
        state: TokenState::Live,
    })
    .await
    .unwrap();
    // Another session holds the link's invitation: the redeem waits for it, and the
    // server cancels the wait at the time-out.
    let mut other = db.client().await;
    let tx = other.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "SELECT * FROM {schema}.owner_access_invitations FOR UPDATE"
    ))
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let err = repo
        .redeem_token(
            &hash,
            Timestamp::from_unix_seconds(t0().unix_seconds() + 10),
        )
        .await
        .expect_err("cancelled");
    assert!(
        matches!(err, RepositoryError::Unavailable { .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let cause = format!("{:?}", std::error::Error::source(&err));
    assert!(
        cause.contains("statement timeout"),
        "the server's reason is kept: {cause}"
    );
    tx.rollback().await.unwrap();
    // Nothing of the cancelled call was kept: the link still works, once.
    let outcome = repo
        .redeem_token(
            &hash,
            Timestamp::from_unix_seconds(t0().unix_seconds() + 10),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, RedeemOutcome::Redeemed { .. }),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn a_row_the_crate_would_not_write_is_corrupt() {
    let db = TestDb::create().await;
    let (settings, schema) = db.fresh_named().await;
    let repo = PostgresRepository::connect(&settings).await.unwrap();
    db.client()
        .await
        .batch_execute(&format!(
            "INSERT INTO {schema}.owner_access_owners
                 (id, community, property, first_name, last_name, property_address)
             VALUES ('', 'c1', 'unit-1', 'Ann', 'Lee', '1 Elm Street')"
        ))
        .await
        .unwrap();
    let err = repo
        .community_owners(&cid(), &owner_access::eligibility::OwnerFilter::default())
        .await
        .expect_err("an empty owner id");
    assert!(matches!(err, RepositoryError::Corrupt { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn a_host_table_with_one_of_our_names_is_name_taken_and_nothing_changes() {
    let db = TestDb::create().await;
    let (settings, schema) = db.fresh_named().await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.owner_access_owners (unit TEXT PRIMARY KEY)"
        ))
        .await
        .unwrap();
    let err = PostgresRepository::connect(&settings)
        .await
        .expect_err("the name is the host's");
    match &err {
        RepositoryError::NameTaken { name, .. } => assert_eq!(name, "owner_access_owners"),
        other => panic!("expected NameTaken, got {other:?}"),
    }
    // Nothing of the migration was kept: not even the versions table.
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables, vec!["owner_access_owners".to_owned()]);
    // The store alone does not need that name.
    owner_access::PostgresStore::connect(&settings)
        .await
        .expect("the store's names are free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn sslmode_prefer_encrypts_when_the_server_offers_tls_and_disable_never() {
    let db = TestDb::create().await;
    let client = db.client().await;
    let server_ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let settings = db.fresh().await;
    let base = settings.url().to_owned();
    for (mode, want_tls) in [("prefer", server_ssl == "on"), ("disable", false)] {
        let app = format!("owner-access-{mode}");
        let url = format!("{base}&sslmode={mode}&application_name={app}");
        let repo = PostgresRepository::connect(&owner_access::PostgresSettings::new(url))
            .await
            .unwrap();
        repo.communities().await.unwrap();
        let ssl: Vec<bool> = client
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.application_name = $1",
                &[&app],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(!ssl.is_empty(), "{mode}: the pool's connection is listed");
        assert!(
            ssl.iter().all(|s| *s == want_tls),
            "{mode}: TLS {ssl:?}, expected {want_tls} (server ssl = {server_ssl})"
        );
        drop(repo);
    }
}

/// A renewal and the record of a group of the same deliveries, at once (a run renews
/// everything it holds while its last group is being recorded): both lock the rows in
/// one order, by owner, so neither waits on the other for ever. Without that order
/// the server found a deadlock between the two (`benches/workers/run.sh`, one worker)
/// and the run stopped `StoreUnavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn a_renewal_beside_the_record_of_the_same_deliveries_never_deadlocks() {
    let db = TestDb::create().await;
    let settings = db.fresh().await;
    let repo = PostgresRepository::connect(&settings).await.unwrap();
    const OWNERS: usize = 400;
    repo.create_batch(&new_batch("b1", OWNERS)).await.unwrap();
    let b1 = BatchId::new("b1").unwrap();
    let sender = SenderId::new("worker").unwrap();
    let lease = Duration::from_secs(60);
    for round in 0..40 {
        let claimed = repo
            .claim_deliveries(&b1, &sender, OWNERS, lease, t0())
            .await
            .unwrap();
        assert_eq!(claimed.len(), OWNERS, "round {round}");
        let mut held: Vec<OwnerId> = claimed.into_iter().map(|d| d.owner).collect();
        held.sort();
        // The group in the other order, each given back pending (unreachable), so the
        // next round claims them all again.
        let group: Vec<(OwnerId, DeliveryOutcome)> = held
            .iter()
            .rev()
            .map(|o| (o.clone(), DeliveryOutcome::Unreachable { attempts: 1 }))
            .collect();
        let (renewed, recorded) = tokio::join!(
            repo.renew_claims(&b1, &sender, &held, lease, t0()),
            repo.record_deliveries(&b1, &sender, &group, t0()),
        );
        let refused_renewal = renewed.unwrap_or_else(|e| panic!("round {round}: renewal {e:?}"));
        let refused_record = recorded.unwrap_or_else(|e| panic!("round {round}: record {e:?}"));
        assert_eq!(
            refused_record,
            [],
            "round {round}: the record comes first or after"
        );
        assert!(refused_renewal.len() <= OWNERS, "round {round}");
    }
}
