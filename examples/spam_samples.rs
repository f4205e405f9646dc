//! Writes the messages the SpamAssassin check of `.ci/spamassassin.sh` scores, as the
//! crate hands them to its transport (no Received header, nothing added on the way):
//! the default invitation, one with a 200 KB attachment, one whose body is the
//! manager's HTML only, and the Summary recap of a batch.
//!
//! ```sh
//! cargo run --example spam_samples -- DIR
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use owner_access::domain::{Community, CommunityId, EmailAddress, Owner, OwnerId, PropertyId};
use owner_access::invite::{Attachment, Invite};
use owner_access::prelude::*;
use owner_access::{InMemoryRepository, InMemoryTransport, OwnerAccess, Selection};

/// A manager's own letter, HTML only.
const MANAGER_LETTER: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Owner portal</title></head>
<body style="font-family: Georgia, serif; font-size: 16px; line-height: 1.5; color: #222222;">
<p>Dear {{owner.full_name}},</p>
<p>As announced at the annual meeting, {{community.name}} now keeps its minutes, budget
and maintenance requests in an online owner portal. Your account for
{{property.address}} is ready for you to set up.</p>
<p><a href="{{registration_url}}">Set up your portal account</a></p>
<p>The link works once and expires on {{expires_on}}. If you have questions, reply to
this message and the board will get back to you.</p>
<p>With best regards,<br>The Board of Directors<br>{{community.name}}</p>
</body></html>
"#;

/// A small PDF padded to about `size` bytes with a text stream: a welcome package.
fn welcome_pdf(size: usize) -> Vec<u8> {
    let line = "Welcome to Maple Grove. Trash pickup is on Tuesdays; the pool opens in May.\n";
    let mut text = String::new();
    while text.len() < size {
        text.push_str(line);
    }
    let stream = format!("BT /F1 12 Tf 72 720 Td ({}) Tj ET", text.replace('\n', " "));
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", i + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "spam-samples".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let repo = Arc::new(InMemoryRepository::new());
    let id = CommunityId::new("maple-grove")?;
    repo.upsert_community(
        &Community::new(id.clone(), "Maple Grove Homeowners Association")
            .with_reply_to(EmailAddress::parse("board@maplegrove.example.org")?),
    )
    .await?;
    let owners: Vec<Owner> = [
        ("o-1", "Eleanor", "Vasquez", "eleanor.vasquez@example.com"),
        ("o-2", "Marcus", "Lindqvist", "marcus.lindqvist@example.net"),
        ("o-3", "Priya", "Raman", "priya.raman@example.org"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (owner, first, last, email))| {
        Owner::new(
            OwnerId::new(*owner).expect("id"),
            id.clone(),
            PropertyId::new(format!("u-{i}")).expect("id"),
            *first,
            *last,
        )
        .with_property_address(format!("{} Silver Maple Court", 1040 + i))
        .with_primary_email(*email)
    })
    .collect();
    repo.upsert_owners(
        &owners,
        owner_access::Clock::now(&owner_access::SystemClock),
    )
    .await?;
    let transport = Arc::new(InMemoryTransport::new());
    let service = OwnerAccess::builder(repo, transport.clone())
        .sender("Maple Grove HOA <no-reply@maplegrove.example.org>")
        .portal_url("https://portal.maplegrove.example.org/register")
        .build()?;
    let compose = |owner: &str| {
        let service = service.clone();
        let id = id.clone();
        let owner = OwnerId::new(owner).expect("id");
        async move { service.compose(&id, &Selection::single(owner)).await }
    };
    let send = |invite: Invite| {
        let service = service.clone();
        async move {
            let review = service.review(&invite).await?;
            assert!(review.problems.is_empty(), "{:?}", review.problems);
            service.send(review).await
        }
    };
    let samples: [(&str, Invite); 3] = [
        (
            "invitation",
            compose("o-1")
                .await?
                .with_summary_to("manager@maplegrove.example.org"),
        ),
        (
            "attachment",
            compose("o-2").await?.with_attachment(Attachment::new(
                "Welcome Package.pdf",
                "application/pdf",
                welcome_pdf(200 * 1024),
            )),
        ),
        (
            "html_only",
            compose("o-3").await?.with_html_body(MANAGER_LETTER),
        ),
    ];
    for (name, invite) in samples {
        transport.clear();
        let report = send(invite).await?;
        assert_eq!(report.sent, 1, "{report:?}");
        let messages = transport.messages();
        std::fs::write(dir.join(format!("{name}.eml")), &messages[0].bytes)?;
        if name == "invitation" {
            // The batch's Summary recap goes out after its invitations.
            assert_eq!(messages.len(), 2, "the invitation and its recap");
            std::fs::write(dir.join("recap.eml"), &messages[1].bytes)?;
        }
    }
    println!(
        "wrote invitation.eml, attachment.eml, html_only.eml and recap.eml into {}",
        dir.display()
    );
    Ok(())
}
