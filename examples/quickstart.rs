//! The whole Owner Access workflow on a demo community, with the embedded defaults:
//! the in-memory repository and a file outbox in `./outbox`.
//!
//! ```sh
//! cargo run --example quickstart
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use owner_access::domain::{Community, CommunityId, Owner, OwnerId, Page, PropertyId};
use owner_access::eligibility::OwnerFilter;
use owner_access::invite::Attachment;
use owner_access::prelude::*;
use owner_access::token::token_from_link;
use owner_access::{FileOutbox, InMemoryRepository, OwnerAccess, Progress, RunControl, Selection};
use tracing_subscriber::EnvFilter;

const OWNERS: usize = 300;

/// A demo community with the mix real data has: owners without email, invalid
/// addresses, one address shared by two properties, registered owners, and one person
/// who owns two units (two records, two addresses).
fn demo_owners(community: &CommunityId) -> Vec<Owner> {
    let first = [
        "Ann", "Bruno", "Chiara", "Dmitri", "Eve", "Farah", "Gus", "Hana", "Ivo", "José",
    ];
    let last = [
        "Lee", "Okafor", "Rossi", "Ivanov", "Martín", "Nguyen", "Schmidt", "Kowalski",
    ];
    (0..OWNERS)
        .map(|i| {
            let id = OwnerId::new(format!("owner-{i:04}")).expect("valid id");
            let property = PropertyId::new(format!("unit-{}", 100 + i)).expect("valid id");
            let (f, l) = (first[i % first.len()], last[(i / 3) % last.len()]);
            let owner = Owner::new(id, community.clone(), property, f, l).with_property_address(
                format!("{} Maple Grove Lane, Unit {}", 10 + i / 20, 100 + i),
            );
            let ascii = |s: &str| -> String {
                s.to_lowercase()
                    .chars()
                    .map(|c| match c {
                        'é' => 'e',
                        'í' => 'i',
                        c => c,
                    })
                    .collect()
            };
            let email = format!("{}.{}{}@example.org", ascii(f), ascii(l), i);
            match i % 20 {
                0 | 7 => owner,                                               // no email on file
                3 => owner.with_primary_email(format!("{f}.at.example.org")), // not an address
                5 if i < 100 => owner.with_primary_email("Family.Home@Example.org"), // shared
                11 | 17 => owner.with_primary_email(email).with_registered(None),
                _ => owner.with_primary_email(email),
            }
        })
        .collect()
}

fn first_link(eml: &[u8]) -> Option<String> {
    let parsed = mailparse::parse_mail(eml).ok()?;
    let mut bodies = vec![parsed];
    while let Some(part) = bodies.pop() {
        if part.ctype.mimetype == "text/plain" {
            let text = part.get_body().ok()?;
            return token_from_link(&text).map(str::to_owned);
        }
        bodies.extend(part.subparts);
    }
    None
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The library's log events on stderr, at RUST_LOG's levels (`warn` when unset).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let repo = Arc::new(InMemoryRepository::new());
    let outbox_dir = std::path::Path::new("outbox");
    if outbox_dir.exists() {
        std::fs::remove_dir_all(outbox_dir)?;
    }
    let outbox = Arc::new(FileOutbox::new(outbox_dir)?);
    let service = OwnerAccess::builder(repo.clone(), outbox.clone())
        .sender("Maple Grove Owner Portal <no-reply@maplegrove.example.org>")
        .portal_url("https://portal.maplegrove.example.org/register")
        .build()?;

    // The host's data.
    let community_id = CommunityId::new("maple-grove")?;
    let community = Community::new(community_id.clone(), "Maple Grove HOA")
        .with_reply_to("board@maplegrove.example.org".parse()?);
    repo.upsert_community(&community).await?;
    let now = service_now();
    repo.upsert_owners(&demo_owners(&community_id), now).await?;

    // Owner Access > Manage, "Unregistered" and "Owners with Emails".
    let roster = service
        .roster(&community_id, &OwnerFilter::unregistered_with_email())
        .await?;
    let c = roster.counts;
    println!(
        "Community {}: {} owners; not invited {}, invited {}, expired {}, registered {} ({:.1}%)",
        community.name,
        c.total(),
        c.not_invited,
        c.invited,
        c.expired,
        c.registered,
        c.percent_registered
    );
    let mut flagged: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &roster.rows {
        if let Some(reason) = row.eligibility.reason() {
            *flagged.entry(reason.code()).or_default() += 1;
        }
    }
    println!(
        "Unregistered with an email: {} rows; flagged: {flagged:?}",
        roster.rows.len()
    );

    // Select All (only eligible rows can be ticked), then compose with a welcome package.
    let selection = Selection::all_eligible(&roster);
    println!("Selected {} owners", selection.len());
    let invite = service
        .compose(&community_id, &selection)
        .await?
        .with_summary_to("manager@maplegrove.example.org")
        .with_attachment(Attachment::new(
            "Welcome Package.pdf",
            "application/pdf",
            b"%PDF-1.4\n% demo welcome package\n".repeat(200),
        ));

    // Save as draft, load it back later.
    let draft = service.save_draft(&invite).await?;
    println!("Saved draft {draft}");
    let invite = service.load_draft(&draft).await?;

    // Generate & Review.
    let review = service.review(&invite).await?;
    println!(
        "Review: {} recipients, {} excluded, {} problems",
        review.recipients.len(),
        review.excluded.len(),
        review.problems.len()
    );
    if let Some(first) = review.recipients.first() {
        let preview = service.preview(&review, &first.owner).await?;
        println!(
            "Preview for {} <{}>: \"{}\"",
            first.owner, first.email, preview.subject
        );
    }

    // Send, with progress.
    let sent_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent_count.clone();
    let control = RunControl::new().with_progress(move |p| {
        if let Progress::Sent { .. } = p {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let report = service.send_with(review, control).await?;
    let batch = report.batch.clone().expect("a batch was sent");
    println!(
        "Batch {batch}: {} sent, {} failed, {} pending; summary: {:?}",
        report.sent,
        report.failed.len(),
        report.pending,
        report.summary
    );
    service.discard_draft(&draft).await?;

    // Resend to one owner: a fresh link, the old one revoked.
    let resent_owner = &report_owner(&service, &batch).await?;
    let resend = service.resend(resent_owner).await?;
    println!("Resent to {resent_owner}: {} sent", resend.sent);

    // The owner registers with the link from their (latest) message.
    let resend_batch = resend.batch.expect("a resend batch");
    let eml = std::fs::read(
        outbox
            .dir()
            .join(format!("{resend_batch}__{resent_owner}.eml")),
    )?;
    let token = first_link(&eml).ok_or("no registration link in the message")?;
    let verified = service.verify(&token).await?;
    println!(
        "Link valid for {} until {}",
        verified.owner.full_name(),
        verified.expires_at
    );
    let registration = service.redeem(&token).await?;
    println!(
        "{} registered at {}",
        registration.owner.full_name(),
        registration.at
    );
    match service.redeem(&token).await {
        Err(e) => println!("Second use of the same link: {e}"),
        Ok(_) => return Err("a link worked twice".into()),
    }

    println!("Activity feed (newest first):");
    for entry in service.activity(&community_id, Page::first(10)).await? {
        println!("  {} {:?}", entry.at, entry.kind);
    }

    let files = std::fs::read_dir(outbox.dir())?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml"))
        })
        .count();
    println!("Wrote {files} .eml files to {}", outbox.dir().display());
    Ok(())
}

fn service_now() -> owner_access::domain::Timestamp {
    use owner_access::Clock;
    owner_access::SystemClock.now()
}

async fn report_owner(
    service: &OwnerAccess,
    batch: &owner_access::domain::BatchId,
) -> Result<OwnerId, Box<dyn std::error::Error>> {
    let deliveries = service.store().deliveries(batch).await?;
    Ok(deliveries.first().ok_or("empty batch")?.owner.clone())
}
