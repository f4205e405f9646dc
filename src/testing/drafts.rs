//! Repository checks: drafts.

use crate::domain::{Draft, DraftId};
use crate::invite::{Attachment, Invite};
use crate::repository::OwnerStorage;

use super::fixtures::*;
use super::harness::*;

/// Drafts: round trip with attachment bytes, replace, newest first per community,
/// delete says whether it existed.
pub async fn drafts_round_trip(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("drafts_round_trip");
    let draft = |id: &str, community: &str, updated: i64| Draft {
        id: DraftId::new(id).expect("fixture id"),
        invite: Invite {
            draft: Some(DraftId::new(id).expect("fixture id")),
            ..invite(community)
        },
        created_at: t(0),
        updated_at: t(updated),
    };
    let mut bytes: Vec<u8> = (0..=255).collect();
    bytes.extend_from_slice(b"\r\n.\r\n\xff\xfe\x00");
    let mut d1 = draft("d1", "c1", 0);
    d1.invite
        .attachments
        .push(Attachment::new("welcome.pdf", "application/pdf", bytes));
    d1.invite
        .attachments
        .push(Attachment::new("empty.txt", "text/plain", Vec::new()));
    // HTML only: the text part is made from it. A store must keep "no text body"
    // apart from an empty one, and an HTML body as written.
    let mut d2 = draft("d2", "c1", 10);
    d2.invite.text_body = None;
    d2.invite.html_body = Some(
        "<p>Hello {{owner.first_name}} <a href=\"{{registration_url}}\">register</a></p>".into(),
    );
    let mut d3 = draft("d3", "c1", 5);
    d3.invite.text_body = Some(String::new());
    let d4 = draft("d4", "c2", 50);
    for d in [&d1, &d2, &d3, &d4] {
        c.ok(repo.save_draft(d).await, "save_draft")?;
    }
    c.eq(
        c.ok(repo.draft(&d1.id).await, "draft")?,
        Some(d1.clone()),
        "draft with attachments",
    )?;
    c.eq(
        c.ok(repo.draft(&d2.id).await, "draft")?,
        Some(d2.clone()),
        "draft with an HTML body only",
    )?;
    c.eq(
        c.ok(repo.draft(&d3.id).await, "draft")?,
        Some(d3.clone()),
        "draft with an empty text body",
    )?;
    let order = |drafts: Vec<Draft>| {
        drafts
            .into_iter()
            .map(|d| d.id.to_string())
            .collect::<Vec<_>>()
    };
    c.eq(
        order(c.ok(repo.drafts(&cid("c1")).await, "drafts")?),
        vec!["d2".to_owned(), "d3".into(), "d1".into()],
        "drafts newest first",
    )?;
    let mut d1b = d1.clone();
    d1b.updated_at = t(20);
    d1b.invite.subject = "Updated subject".into();
    c.ok(repo.save_draft(&d1b).await, "save_draft (replace)")?;
    c.eq(
        c.ok(repo.draft(&d1.id).await, "draft")?,
        Some(d1b),
        "replaced draft",
    )?;
    c.eq(
        order(c.ok(repo.drafts(&cid("c1")).await, "drafts")?),
        vec!["d1".to_owned(), "d2".into(), "d3".into()],
        "drafts after d1 was saved again",
    )?;
    c.eq(
        c.ok(repo.delete_draft(&d1.id).await, "delete_draft")?,
        true,
        "deleting d1",
    )?;
    c.eq(
        c.ok(repo.delete_draft(&d1.id).await, "delete_draft")?,
        false,
        "deleting d1 again",
    )?;
    c.eq(
        c.ok(repo.draft(&d1.id).await, "draft")?,
        None,
        "deleted draft",
    )?;
    c.eq(
        order(c.ok(repo.drafts(&cid("c1")).await, "drafts")?),
        vec!["d2".to_owned(), "d3".into()],
        "drafts after delete",
    )?;
    c.eq(
        order(c.ok(repo.drafts(&cid("c2")).await, "drafts")?),
        vec!["d4".to_owned()],
        "drafts of c2",
    )
}
