//! Measures the SQLite repository on the four workloads that matter at scale, on a
//! fresh file in a temp dir:
//!
//! 1. import 100,000 owners (ten communities of 10,000) in one `upsert_owners` call,
//!    which is one transaction;
//! 2. the roster with eligibility of one 10,000-owner community through
//!    `OwnerAccess::roster` (addresses checked against all 100,000 owners), with the
//!    number of SQL statements it ran;
//! 3. storing a batch of 10,000 deliveries (`create_batch`, one transaction);
//! 4. 10,000 delivery outcomes, each claimed and recorded through the trait, each
//!    committed as it happens;
//! 5. opening a file written before schema version 4 (made here with the earlier
//!    schema's SQL) that holds 100,000 owners: the migration re-keys every address
//!    with `delivered_key`, in Rust.
//!
//! ```sh
//! cargo run --release --features sqlite --example sqlite_figures
//! ```

use std::sync::Arc;
use std::time::Instant;

use owner_access::adapters::sqlite::SqliteRepository;
use owner_access::domain::{
    ActivityEntry, ActivityKind, Batch, BatchId, Community, CommunityId, DeliveryOutcome,
    EmailAddress, Mailbox, NewBatch, Owner, OwnerId, PropertyId, SenderId,
};
use owner_access::eligibility::OwnerFilter;
use owner_access::invite::Invite;
use owner_access::prelude::*;
use owner_access::selection::Selection;
use owner_access::{Clock, InMemoryTransport, OwnerAccess, SystemClock};

const COMMUNITIES: usize = 10;
const PER_COMMUNITY: usize = 10_000;
const OUTCOMES: usize = 10_000;

fn community(c: usize) -> CommunityId {
    CommunityId::new(format!("community-{c}")).expect("id")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("figures.db");
    let repo = SqliteRepository::open(&path).await?;
    let now = SystemClock.now();

    let mut owners = Vec::with_capacity(COMMUNITIES * PER_COMMUNITY);
    for c in 0..COMMUNITIES {
        repo.upsert_community(&Community::new(community(c), format!("Community {c}")))
            .await?;
        for i in 0..PER_COMMUNITY {
            let n = c * PER_COMMUNITY + i;
            let mut owner = Owner::new(
                OwnerId::new(format!("o{n:06}"))?,
                community(c),
                PropertyId::new(format!("p{n:06}"))?,
                format!("First{i}"),
                format!("Last{i}"),
            )
            .with_property_address(format!("{i} Main Street"));
            // Most owners have their own address; one in 100 has none, one in 100
            // shares its neighbour's.
            let key = if n % 100 == 1 { n - 1 } else { n };
            if n % 100 != 50 {
                owner = owner.with_primary_email(format!("owner{key}@example.org"));
            }
            owners.push(owner);
        }
    }
    let started = Instant::now();
    repo.upsert_owners(&owners, now).await?;
    let import = started.elapsed();
    println!(
        "import: {} owners in one transaction: {:.2} s ({:.1} µs per owner)",
        owners.len(),
        import.as_secs_f64(),
        import.as_secs_f64() * 1e6 / owners.len() as f64
    );

    let transport = Arc::new(InMemoryTransport::new());
    let service = OwnerAccess::builder(Arc::new(repo.clone()), transport)
        .sender("Owner Portal <no-reply@example.com>")
        .portal_url("https://portal.example.com/register")
        .build()?;
    let _warm = service.roster(&community(0), &OwnerFilter::all()).await?;
    let runs = 5;
    let statements = repo.statement_count();
    let started = Instant::now();
    let mut roster = None;
    for _ in 0..runs {
        roster = Some(service.roster(&community(0), &OwnerFilter::all()).await?);
    }
    let per_roster = started.elapsed() / runs;
    let roster = roster.expect("ran");
    println!(
        "roster: {} rows ({} eligible) with eligibility: {:.1} ms per roster, {} SQL statements each",
        roster.rows.len(),
        roster.eligible().count(),
        per_roster.as_secs_f64() * 1e3,
        (repo.statement_count() - statements) / u64::from(runs)
    );

    let batch_id = BatchId::new("figures-batch")?;
    let recipients: Vec<Owner> = owners
        .iter()
        .filter(|o| o.primary_email.is_some())
        .take(OUTCOMES)
        .cloned()
        .collect();
    let invite = service
        .compose(
            &community(0),
            &Selection::of(recipients.iter().map(|o| o.id.clone())),
        )
        .await?;
    // The batch the outcomes below use is the last of five stored; the figure is their
    // median.
    let mut stores = Vec::new();
    for run in (0..5).rev() {
        let id = if run == 0 {
            batch_id.clone()
        } else {
            BatchId::new(format!("figures-store-{run}"))?
        };
        let new = new_batch(&id, invite.clone(), &recipients, now)?;
        let started = Instant::now();
        repo.create_batch(&new).await?;
        stores.push(started.elapsed());
    }
    stores.sort();
    let store = stores[stores.len() / 2];
    println!(
        "store: a batch of {} deliveries in one transaction: {:.1} ms ({:.1} µs per delivery; median of {})",
        recipients.len(),
        store.as_secs_f64() * 1e3,
        store.as_secs_f64() * 1e6 / recipients.len() as f64,
        stores.len()
    );
    let expires_at = now + std::time::Duration::from_secs(14 * 86_400);
    let started = Instant::now();
    let mut recorded = 0;
    let sender = SenderId::generate();
    loop {
        let claimed = repo
            .claim_deliveries(
                &batch_id,
                &sender,
                32,
                owner_access::DEFAULT_CLAIM_LEASE,
                SystemClock.now(),
            )
            .await?;
        if claimed.is_empty() {
            break;
        }
        for delivery in claimed {
            let outcome = DeliveryOutcome::Sent {
                expires_at,
                attempts: 1,
            };
            repo.record_delivery(
                &batch_id,
                &sender,
                &delivery.owner,
                &outcome,
                SystemClock.now(),
            )
            .await?;
            recorded += 1;
        }
    }
    let outcomes = started.elapsed();
    let counts = repo.delivery_counts(&batch_id).await?;
    assert_eq!(counts.sent, recorded);
    println!(
        "outcomes: {recorded} claimed and recorded, each committed (synchronous=FULL): {:.2} s ({:.0} µs per outcome)",
        outcomes.as_secs_f64(),
        outcomes.as_secs_f64() * 1e6 / recorded as f64
    );
    println!(
        "database file: {:.1} MB",
        std::fs::metadata(&path)?.len() as f64 / 1e6
    );
    rekey_figure(&dir.path().join("before-rekey.db")).await
}

/// Times the open of a schema-3 file of 100,000 owners keyed as that schema keyed them
/// (trimmed, lower-cased text, here of mixed-case addresses, so that every key
/// changes), and checks the keys it leaves.
async fn rekey_figure(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    const EARLIER: [&str; 3] = [
        include_str!("../src/adapters/sqlite/schema/legacy/0001_initial.sql"),
        include_str!("../src/adapters/sqlite/schema/legacy/0002_invite_sender.sql"),
        include_str!("../src/adapters/sqlite/schema/legacy/0003_text_from_html.sql"),
    ];
    let owners = COMMUNITIES * PER_COMMUNITY;
    {
        let mut conn = rusqlite::Connection::open(path)?;
        for sql in EARLIER {
            conn.execute_batch(sql)?;
        }
        conn.pragma_update(None, "application_id", 0x4F41_6363_i64)?;
        conn.pragma_update(None, "user_version", EARLIER.len() as i64)?;
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO owners (id, community, property, first_name, last_name,
                     property_address, primary_email, email_key, access)
                 VALUES (?1, 'c', ?1, 'F', 'L', '', ?2, ?3, 'not_invited')",
            )?;
            for n in 0..owners {
                // A quarter of them spelled so that the old key differs from the new
                // one in more than case: quoted, fullwidth, soft hyphen, U-label.
                let email = match n % 8 {
                    0 => format!("\"Owner{n}\"@Example.org"),
                    1 => format!("owner{n}@ｅｘａｍｐｌｅ.org"),
                    2 => format!("Owner{n}@exam\u{AD}ple.org"),
                    3 => format!("owner{n}@bücher.example"),
                    _ => format!("Owner{n}@Example.ORG"),
                };
                let old_key = email.trim().to_lowercase();
                insert.execute(rusqlite::params![format!("o{n:06}"), email, old_key])?;
            }
        }
        tx.commit()?;
    }
    let started = Instant::now();
    let repo = SqliteRepository::open(path).await?;
    let open = started.elapsed();
    let holders = repo
        .email_holders(&[
            "owner1@example.org".into(),
            "owner3@xn--bcher-kva.example".into(),
        ])
        .await?;
    assert_eq!(holders.len(), 2, "re-keyed: {holders:?}");
    println!(
        "re-key: opening a schema-3 file of {owners} owners migrates it, every address re-keyed in Rust: {:.2} s ({:.1} µs per owner)",
        open.as_secs_f64(),
        open.as_secs_f64() * 1e6 / owners as f64
    );
    Ok(())
}

fn new_batch(
    id: &BatchId,
    invite: Invite,
    recipients: &[Owner],
    now: owner_access::domain::Timestamp,
) -> Result<NewBatch, Box<dyn std::error::Error>> {
    let batch = Batch {
        id: id.clone(),
        community: invite.community.clone(),
        invite,
        sender: Mailbox {
            name: Some("Owner Portal".into()),
            address: EmailAddress::parse("no-reply@example.com")?,
        },
        portal_url: "https://portal.example.com/register".into(),
        token_ttl_seconds: 14 * 86_400,
        created_at: now,
        resend: false,
    };
    let deliveries = recipients
        .iter()
        .map(|o| {
            let to = EmailAddress::parse(o.primary_email.as_deref().unwrap_or_default())?;
            Ok((o.id.clone(), to))
        })
        .collect::<Result<Vec<_>, owner_access::domain::InvalidEmail>>()?;
    Ok(NewBatch {
        activity: ActivityEntry {
            community: batch.community.clone(),
            at: now,
            kind: ActivityKind::BatchCreated {
                batch: batch.id.clone(),
                recipients: deliveries.len(),
                excluded: 0,
                resend: false,
            },
        },
        deliveries,
        batch,
    })
}
