//! Sends one owner's invitation through a real SMTP server.
//!
//! ```sh
//! # e.g. Postfix's smtp-sink on port 2525, or any relay you may use:
//! OWNER_ACCESS_SMTP_URL=smtp://127.0.0.1:2525 \
//! OWNER_ACCESS_TO=ann@example.org \
//! cargo run --features smtp --example smtp_send
//! ```
//!
//! `OWNER_ACCESS_SMTP_URL` is `smtp://host:port`, `smtp://host:port?starttls=required`
//! or `smtps://host:port`; `OWNER_ACCESS_SMTP_USER` and `OWNER_ACCESS_SMTP_PASSWORD`
//! add AUTH; `OWNER_ACCESS_FROM` sets the sender (default
//! `Owner Portal <no-reply@example.com>`).

use std::sync::Arc;

use owner_access::adapters::smtp::{SmtpSettings, SmtpTransport};
use owner_access::domain::{Community, CommunityId, Owner, OwnerId, PropertyId};
use owner_access::eligibility::OwnerFilter;
use owner_access::prelude::*;
use owner_access::transport::MailTransport;
use owner_access::{InMemoryRepository, OwnerAccess, Selection};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("OWNER_ACCESS_SMTP_URL")
        .map_err(|_| "set OWNER_ACCESS_SMTP_URL, e.g. smtp://127.0.0.1:2525")?;
    let to = std::env::var("OWNER_ACCESS_TO").unwrap_or_else(|_| "ann@example.org".into());
    let from = std::env::var("OWNER_ACCESS_FROM")
        .unwrap_or_else(|_| "Owner Portal <no-reply@example.com>".into());

    let mut settings = SmtpSettings::from_url(&url)?.with_connections(1);
    if let (Ok(user), Ok(password)) = (
        std::env::var("OWNER_ACCESS_SMTP_USER"),
        std::env::var("OWNER_ACCESS_SMTP_PASSWORD"),
    ) {
        settings = settings.with_credentials(user, password);
    }
    let transport = Arc::new(SmtpTransport::new(settings)?);

    let repo = Arc::new(InMemoryRepository::new());
    let service = OwnerAccess::builder(repo.clone(), transport.clone())
        .sender(from)
        .portal_url("https://portal.example.com/register")
        .build()?;
    let community = CommunityId::new("maple-grove")?;
    repo.upsert_community(&Community::new(community.clone(), "Maple Grove HOA"))
        .await?;
    let owner = Owner::new(
        OwnerId::new("o-1")?,
        community.clone(),
        PropertyId::new("unit-1")?,
        "Ann",
        "Lee",
    )
    .with_primary_email(to.as_str());
    repo.upsert_owners(
        &[owner],
        owner_access::Clock::now(&owner_access::SystemClock),
    )
    .await?;

    let roster = service
        .roster(&community, &OwnerFilter::unregistered_with_email())
        .await?;
    let invite = service
        .compose(&community, &Selection::all_eligible(&roster))
        .await?;
    let review = service.review(&invite).await?;
    let report = service.send(review).await?;
    transport.close().await?;
    println!(
        "Sent through {transport}: {} sent, {} failed, {} pending",
        report.sent,
        report.failed.len(),
        report.pending
    );
    for failed in &report.failed {
        println!("failed {}: {}", failed.owner, failed.error);
    }
    if let Some(reason) = &report.stopped {
        println!("stopped: {reason:?}");
    }
    Ok(())
}
