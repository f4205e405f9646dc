//! Writes the default invitation as one owner would receive it: its HTML part to
//! `<dir>/letter.html`, its text part to `<dir>/letter.txt` and the whole message to
//! `<dir>/letter.eml`, through the public API (compose, review, preview: no token is
//! minted, the link holds a placeholder).
//!
//! ```sh
//! cargo run --example letter_preview -- docs            # no branding, UTC
//! cargo run --example letter_preview -- out --branded   # a logo, an accent colour, a time zone
//! ```
//!
//! `docs/render_letter.sh` renders the HTML in headless Chromium for the screenshots
//! in `docs/`.

use std::path::PathBuf;
use std::sync::Arc;

use owner_access::domain::{
    Branding, Community, CommunityId, EmailAddress, Owner, OwnerId, PropertyId, TimeZoneName,
};
use owner_access::prelude::*;
use owner_access::{InMemoryRepository, InMemoryTransport, ManualClock, OwnerAccess, Selection};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "docs".into()));
    let branded = args.any(|a| a == "--branded");
    std::fs::create_dir_all(&dir)?;

    let repo = Arc::new(InMemoryRepository::new());
    let id = CommunityId::new("maple-grove")?;
    let mut community = Community::new(id.clone(), "Maple Grove Homeowners Association")
        .with_reply_to(EmailAddress::parse("board@maplegrove.example.org")?);
    if branded {
        community = community
            .with_time_zone(TimeZoneName::new("America/Chicago")?)
            .with_branding(
                Branding::new()
                    .with_logo_url("https://maplegrove.example.org/logo.png")?
                    .with_accent_color("#2e6b30")?,
            );
    }
    repo.upsert_community(&community).await?;
    let owner = Owner::new(
        OwnerId::new("o-1042")?,
        id.clone(),
        PropertyId::new("u-1042")?,
        "Eleanor",
        "Vasquez-Whitfield",
    )
    .with_property_address("1042 Silver Maple Court, Unit 3B")
    .with_primary_email("eleanor.vasquez@example.com");
    // 1 December 2026, 14:30 UTC: the link expires 14 days later.
    let clock = Arc::new(ManualClock::new(
        owner_access::domain::Timestamp::from_unix_seconds(1_796_135_400),
    ));
    repo.upsert_owners(
        std::slice::from_ref(&owner),
        owner_access::Clock::now(clock.as_ref()),
    )
    .await?;
    let service = OwnerAccess::builder(repo, Arc::new(InMemoryTransport::new()))
        .sender("Maple Grove HOA <no-reply@maplegrove.example.org>")
        .portal_url("https://portal.maplegrove.example.org/register")
        .clock(clock)
        .build()?;
    let invite = service
        .compose(&id, &Selection::single(owner.id.clone()))
        .await?;
    let review = service.review(&invite).await?;
    let preview = service.preview(&review, &owner.id).await?;
    std::fs::write(dir.join("letter.html"), &preview.html)?;
    std::fs::write(dir.join("letter.txt"), &preview.text)?;
    std::fs::write(dir.join("letter.eml"), &preview.message)?;
    println!(
        "wrote {}/letter.html, letter.txt and letter.eml",
        dir.display()
    );
    Ok(())
}
