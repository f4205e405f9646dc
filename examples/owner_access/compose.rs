//! Writing an invitation: `review` (Generate & Review, sends nothing) and the drafts
//! (`draft save`, `draft list`, `draft discard`); the invite built from the SELECT and
//! MESSAGE flags, which `send` uses too.

use std::path::Path;

use owner_access::domain::{CommunityId, DraftId};
use owner_access::eligibility::OwnerFilter;
use owner_access::invite::{Attachment, Invite};
use owner_access::{Error, OwnerAccess, Selection};

use crate::app::App;
use crate::args::{MessageArgs, SelectArgs};
use crate::failure::{Failure, id};
use crate::output;

impl App {
    /// `review`: Generate & Review; exit 1 when the invite has problems. Sends and
    /// stores nothing.
    pub async fn review(
        &self,
        community: &str,
        select: &SelectArgs,
        message: &MessageArgs,
        json: bool,
    ) -> Result<u8, Failure> {
        let service = self.service_without_transport(message)?;
        let invite = self.invite(&service, community, select, message).await?;
        let review = service.review(&invite).await?;
        drop(invite);
        if json {
            output::write_stdout(|out| output::write_review_json(&review, out))?;
        } else {
            print!("{}", output::terminal_safe(&output::review_text(&review)));
        }
        Ok(if review.problems.is_empty() { 0 } else { 1 })
    }

    /// The invite from the SELECT and MESSAGE flags.
    pub async fn invite(
        &self,
        service: &OwnerAccess,
        community: &str,
        select: &SelectArgs,
        message: &MessageArgs,
    ) -> Result<Invite, Failure> {
        let community: CommunityId = id("community", community)?;
        let mut selection = if select.select.trim().eq_ignore_ascii_case("all") {
            // Every owner of the community, straight from the store and as ids only:
            // the review assesses each one anyway, so a roster (with its own
            // eligibility pass) would do that work twice, and a million owner records
            // would be held here only to take their ids. An unknown community is
            // reported by `compose` below.
            self.repo
                .community_owner_ids(&community, &OwnerFilter::all())
                .await
                .map_err(Error::directory)?
                .into_iter()
                .collect()
        } else {
            let mut s = Selection::new();
            for raw in select
                .select
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                s.select(id("select", raw)?);
            }
            s
        };
        for raw in select
            .exclude
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            selection.deselect(&id("exclude", raw)?);
        }
        let invite = service.compose(&community, &selection).await?;
        apply_message(invite, message)
    }

    /// `draft save`: prints the new draft's id.
    pub async fn save_draft(
        &self,
        community: &str,
        select: &SelectArgs,
        message: &MessageArgs,
    ) -> Result<u8, Failure> {
        let service = self.service_without_transport(message)?;
        let invite = self.invite(&service, community, select, message).await?;
        let id = service.save_draft(&invite).await?;
        println!("{}", output::shown(id.as_str()));
        Ok(0)
    }

    /// `draft list`: the community's drafts.
    pub async fn list_drafts(&self, community: &str, json: bool) -> Result<u8, Failure> {
        let community: CommunityId = id("community", community)?;
        let service = self.service_without_transport(&MessageArgs::defaults())?;
        let drafts = service.drafts(&community).await?;
        output::print_out(
            json,
            output::drafts_json(&drafts),
            output::drafts_text(&drafts),
        );
        Ok(0)
    }

    /// `draft discard`.
    pub async fn discard_draft(&self, draft: &str) -> Result<u8, Failure> {
        let draft: DraftId = id("draft", draft)?;
        let service = self.service_without_transport(&MessageArgs::defaults())?;
        service.discard_draft(&draft).await?;
        println!("discarded {}", output::shown(draft.as_str()));
        Ok(0)
    }
}

/// The MESSAGE flags given, set on an invite (every one is kept by a draft).
pub fn apply_message(mut invite: Invite, message: &MessageArgs) -> Result<Invite, Failure> {
    if let Some(subject) = &message.subject {
        invite.subject = subject.clone();
    }
    // One body given: the other part is made from it, so both say the same thing.
    let text = message
        .text
        .as_deref()
        .map(|p| read_text(p, "--text"))
        .transpose()?;
    let html = message
        .html
        .as_deref()
        .map(|p| read_text(p, "--html"))
        .transpose()?;
    invite = match (text, html) {
        (Some(text), Some(html)) => invite.with_bodies(text, html),
        (Some(text), None) => invite.with_text_body(text),
        (None, Some(html)) => invite.with_html_body(html),
        (None, None) => invite,
    };
    for path in &message.attach {
        let bytes = std::fs::read(path)
            .map_err(|e| Failure::input(format!("--attach {}: {e}", path.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        invite = invite.with_attachment(Attachment::new(name, content_type(path), bytes));
    }
    if let Some(to) = &message.summary_to {
        invite = invite.with_summary_to(to.clone());
    }
    if let Some(reply_to) = &message.reply_to {
        invite = invite.with_reply_to(reply_to.clone());
    }
    if let Some(from) = &message.from {
        invite = invite.with_from(from.clone());
    }
    if let Some(url) = &message.portal_url {
        invite = invite.with_portal_url(url.clone());
    }
    Ok(invite)
}

fn read_text(path: &Path, flag: &str) -> Result<String, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::input(format!("{flag} {}: {e}", path.display())))?;
    String::from_utf8(bytes)
        .map_err(|_| Failure::input(format!("{flag} {}: not UTF-8 text", path.display())))
}

/// The content type from the file's extension.
fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "html" | "htm" => "text/html",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "csv" => "text/csv",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}
