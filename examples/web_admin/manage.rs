//! Communities, Owner Access > Manage, the per-owner resend, the activity feed and
//! Mass Edit: each reads one library answer and shows it.

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::{Value, context};
use owner_access::domain::{AccessState, ActivityKind, Community, CommunityId, OwnerId, Page};
use owner_access::eligibility::{AccessFilter, EmailFilter, OwnerFilter};
use owner_access::error::MassEditProblem;
use owner_access::repository::EmailEdit;
use owner_access::{Error, SendReport};
use serde::{Deserialize, Serialize};

use crate::app::{AppError, AppState, Fields, refused_form};
use crate::auth::Admin;

pub fn community_id(raw: &str) -> Result<CommunityId, AppError> {
    CommunityId::new(raw).map_err(|_| AppError::NotFound(format!("community `{raw}` not found")))
}

/// The community, or not found.
pub async fn community_of(state: &AppState, id: &CommunityId) -> Result<Community, AppError> {
    let community = state
        .service
        .directory()
        .community(id)
        .await
        .map_err(Error::directory)?;
    community.ok_or_else(|| AppError::NotFound(format!("community `{id}` not found")))
}

/// The community's name, or not found.
pub async fn community_name(state: &AppState, id: &CommunityId) -> Result<String, AppError> {
    Ok(community_of(state, id).await?.name)
}

/// What the header of every community page shows.
pub fn page_context(admin: &Admin, state: &AppState, id: &CommunityId, name: &str) -> Value {
    context! {
        csrf => admin.csrf,
        flash => admin.take_flash(state),
        community => context! { id => id.as_str(), name => name },
    }
}

#[derive(Serialize)]
struct CommunityLine {
    id: String,
    name: String,
    owners: usize,
    percent_registered: String,
    eligible: usize,
}

/// Communities: each with its owners, % registered, and the unregistered owners with a
/// usable email (those an invitation would reach).
pub async fn communities(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Html<String>, AppError> {
    let mut lines = Vec::new();
    for community in state
        .service
        .directory()
        .communities()
        .await
        .map_err(Error::directory)?
    {
        let roster = state
            .service
            .roster(&community.id, &OwnerFilter::unregistered_with_email())
            .await?;
        lines.push(CommunityLine {
            id: community.id.to_string(),
            name: community.name.clone(),
            owners: roster.counts.total(),
            percent_registered: format!("{:.1}", roster.counts.percent_registered),
            eligible: roster.eligible().count(),
        });
    }
    state.render(
        "communities.html",
        context! { csrf => admin.csrf, flash => admin.take_flash(&state), communities => lines },
    )
}

#[derive(Deserialize, Default)]
pub struct ManageQuery {
    tab: Option<String>,
    email: Option<String>,
    q: Option<String>,
}

#[derive(Serialize)]
struct Row {
    id: String,
    name: String,
    property: String,
    address: String,
    email: String,
    state: &'static str,
    state_label: &'static str,
    eligible: bool,
    note: String,
}

fn state_words(state: AccessState) -> (&'static str, &'static str) {
    match state {
        AccessState::NotInvited => ("not_invited", "Not invited"),
        AccessState::Invited => ("invited", "Invited"),
        AccessState::Expired => ("expired", "Invited, link expired"),
        AccessState::Registered => ("registered", "Registered"),
    }
}

/// Owner Access > Manage: the tabs with their counts, the filter, and a row per owner
/// with status and, when they cannot be invited, the library's reason in words.
pub async fn manage(
    State(state): State<AppState>,
    admin: Admin,
    Path(community): Path<String>,
    Query(query): Query<ManageQuery>,
) -> Result<Html<String>, AppError> {
    let id = community_id(&community)?;
    let name = community_name(&state, &id).await?;
    let tab = query.tab.as_deref().unwrap_or("unregistered");
    let access = match tab {
        "all" => AccessFilter::All,
        "invited" => AccessFilter::Invited,
        "registered" => AccessFilter::Registered,
        _ => AccessFilter::Unregistered,
    };
    let email = match query.email.as_deref() {
        Some("with") => EmailFilter::WithEmail,
        Some("without") => EmailFilter::WithoutEmail,
        _ => EmailFilter::Any,
    };
    let mut filter = OwnerFilter::all().with_access(access).with_email(email);
    if let Some(q) = query.q.as_deref().filter(|q| !q.trim().is_empty()) {
        filter = filter.with_search(q);
    }
    let roster = state.service.roster(&id, &filter).await?;
    let rows: Vec<Row> = roster
        .rows
        .iter()
        .map(|row| {
            let (state, state_label) = state_words(row.state);
            Row {
                id: row.owner.id.to_string(),
                name: row.owner.full_name(),
                property: row.owner.property.to_string(),
                address: row.owner.property_address.clone(),
                email: row.owner.primary_email.clone().unwrap_or_default(),
                state,
                state_label,
                eligible: row.eligibility.is_eligible(),
                note: match row.eligibility.reason() {
                    Some(reason) => reason.to_string(),
                    None => "can be invited".to_owned(),
                },
            }
        })
        .collect();
    let c = roster.counts;
    let ctx = page_context(&admin, &state, &id, &name);
    let ctx = context! {
            tab => tab,
            email => query.email.as_deref().unwrap_or("any"),
            q => query.q.as_deref().unwrap_or(""),
            counts => context! {
                all => c.total(),
                unregistered => c.not_invited + c.invited + c.expired,
                invited => c.invited + c.expired,
                expired => c.expired,
                registered => c.registered,
                percent => format!("{:.1}", c.percent_registered),
            },
            eligible => rows.iter().filter(|r| r.eligible).count(),
            rows => rows,
            ..ctx
    };
    state.render("manage.html", ctx)
}

/// The resend button of an invited owner's row: `resend` (a fresh link with the
/// message of the owner's latest batch), then back to Manage with what happened.
pub async fn resend(
    State(state): State<AppState>,
    admin: Admin,
    Path(community): Path<String>,
    fields: Fields,
) -> Result<Response, AppError> {
    admin.check(&fields)?;
    let id = community_id(&community)?;
    let owner_raw = fields.get("resend_owner").unwrap_or_default();
    let owner = OwnerId::new(owner_raw)
        .map_err(|_| AppError::BadRequest(format!("`{owner_raw}` is not an owner id")))?;
    let message = match state.service.resend(&owner).await {
        Ok(report) => resend_words(&owner, &report),
        Err(e @ (Error::NotEligible { .. } | Error::NotFound { .. })) => {
            format!("Not resent: {e}")
        }
        Err(e) => return Err(e.into()),
    };
    admin.flash(&state, message);
    let back = fields
        .get("back")
        .filter(|b| b.starts_with(&format!("/c/{id}/")))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("/c/{id}/manage?tab=invited"));
    Ok(Redirect::to(&back).into_response())
}

fn resend_words(owner: &OwnerId, report: &SendReport) -> String {
    if report.sent == 1 {
        format!(
            "Resent the registration email to {owner}: a fresh link; the old one stops working."
        )
    } else if let Some(failed) = report.failed.first() {
        format!("The resend to {owner} failed: {}", failed.error)
    } else if let Some(stopped) = &report.stopped {
        format!("The resend to {owner} did not go out ({stopped}); the old link still works.")
    } else {
        format!("The resend to {owner} did not go out; the old link still works.")
    }
}

#[derive(Serialize)]
struct FeedLine {
    at: String,
    text: String,
    link: Option<String>,
}

#[derive(Serialize)]
struct DraftLine {
    id: String,
    subject: String,
    selected: usize,
    updated: String,
}

/// The Community Activity Feed, with the drafts above it (open one to continue).
pub async fn activity(
    State(state): State<AppState>,
    admin: Admin,
    Path(community): Path<String>,
) -> Result<Html<String>, AppError> {
    let id = community_id(&community)?;
    let community = community_of(&state, &id).await?;
    let name = community.name.clone();
    let drafts: Vec<DraftLine> = state
        .service
        .drafts(&id)
        .await?
        .into_iter()
        .map(|d| DraftLine {
            id: d.id.to_string(),
            subject: d.invite.subject.clone(),
            selected: d.invite.selection.len(),
            updated: community.format_time(d.updated_at),
        })
        .collect();
    let entries = state.service.activity(&id, Page::first(200)).await?;
    let feed: Vec<FeedLine> = entries
        .iter()
        .map(|e| {
            let link = e.kind.batch().map(|b| format!("/c/{id}/batches/{b}"));
            FeedLine {
                at: community.format_time(e.at),
                text: activity_words(&e.kind),
                link,
            }
        })
        .collect();
    let ctx = page_context(&admin, &state, &id, &name);
    state.render(
        "activity.html",
        context! { drafts => drafts, feed => feed, ..ctx },
    )
}

/// `1 owner`, `2 owners`.
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn activity_words(kind: &ActivityKind) -> String {
    match kind {
        ActivityKind::DraftSaved { draft, selected } => {
            format!(
                "Draft {draft} saved ({} selected)",
                plural(*selected, "owner")
            )
        }
        ActivityKind::DraftDiscarded { draft } => format!("Draft {draft} discarded"),
        ActivityKind::BatchCreated {
            batch,
            recipients,
            excluded,
            resend,
        } => {
            let what = if *resend {
                "Resend"
            } else {
                "Invitation batch"
            };
            format!(
                "{what} {batch} created: {}, {excluded} excluded",
                plural(*recipients, "recipient")
            )
        }
        ActivityKind::BatchFinished {
            batch,
            sent,
            failed,
            pending,
            stopped,
        } => {
            let mut line =
                format!("Batch {batch} run ended: {sent} sent, {failed} failed, {pending} pending");
            if let Some(why) = stopped {
                line.push_str(&format!(" (stopped: {why})"));
            }
            line
        }
        ActivityKind::Registered { owner, batch } => {
            format!("Owner {owner} registered (link of batch {batch})")
        }
        ActivityKind::MassEdit { changed } => {
            format!("Mass edit of primary emails: {changed} changed")
        }
        other => format!("{other:?}"),
    }
}

/// Mass Edit of primary emails: paste or upload `owner_id,primary_email` lines.
pub async fn mass_edit_page(
    State(state): State<AppState>,
    admin: Admin,
    Path(community): Path<String>,
) -> Result<Html<String>, AppError> {
    let id = community_id(&community)?;
    let name = community_name(&state, &id).await?;
    let ctx = page_context(&admin, &state, &id, &name);
    state.render(
        "mass_edit.html",
        context! { text => "", problems => Vec::<String>::new(), ..ctx },
    )
}

/// Applies a mass edit, all or nothing; a rejected one comes back with every bad row
/// and the text as it was sent.
pub async fn mass_edit(
    State(state): State<AppState>,
    admin: Admin,
    Path(community): Path<String>,
    fields: Fields,
) -> Result<Response, AppError> {
    admin.check(&fields)?;
    let id = community_id(&community)?;
    let name = community_name(&state, &id).await?;
    let mut text = fields.get("edits").unwrap_or_default().to_owned();
    if let Some(file) = fields.files.first() {
        text = String::from_utf8_lossy(&file.bytes).into_owned();
    }
    let problems = match parse_edits(&text) {
        Err(lines) => lines,
        Ok(edits) => match state.service.mass_edit_emails(&id, &edits).await {
            Ok(report) => {
                admin.flash(
                    &state,
                    format!(
                        "Mass edit applied: {} changed, {} unchanged.",
                        report.changed.len(),
                        report.unchanged
                    ),
                );
                return Ok(Redirect::to(&format!("/c/{id}/manage?tab=all")).into_response());
            }
            Err(Error::MassEditRejected { problems }) => {
                problems.iter().map(mass_edit_words).collect()
            }
            Err(e) => return Err(e.into()),
        },
    };
    let ctx = page_context(&admin, &state, &id, &name);
    let page = state.render(
        "mass_edit.html",
        context! { text => text, problems => problems, ..ctx },
    )?;
    Ok(refused_form(page))
}

/// `owner_id,primary_email` per line (a header line naming the columns is skipped).
fn parse_edits(text: &str) -> Result<Vec<EmailEdit>, Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut edits = Vec::new();
    let mut bad = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let line = n + 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                bad.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let owner = record.get(0).unwrap_or_default().trim();
        if line == 1 && owner == "owner_id" {
            continue;
        }
        if record.len() != 2 {
            bad.push(format!(
                "line {line}: expected owner_id,primary_email (2 columns), found {}",
                record.len()
            ));
            continue;
        }
        match OwnerId::new(owner) {
            Ok(owner) => {
                let email = record.get(1).unwrap_or_default().trim();
                edits.push(EmailEdit {
                    owner,
                    email: (!email.is_empty()).then(|| email.to_owned()),
                });
            }
            Err(e) => bad.push(format!("line {line}: `{owner}` is not an owner id: {e}")),
        }
    }
    if bad.is_empty() { Ok(edits) } else { Err(bad) }
}

fn mass_edit_words(problem: &MassEditProblem) -> String {
    match problem {
        MassEditProblem::UnknownOwner { owner } => format!("{owner}: no such owner here"),
        MassEditProblem::InvalidEmail {
            owner,
            email,
            error,
        } => {
            format!("{owner}: `{email}` is not a valid address: {error}")
        }
        MassEditProblem::SharedEmail { owner, email, with } => {
            let with: Vec<&str> = with.iter().map(OwnerId::as_str).collect();
            format!("{owner}: `{email}` is already used by {}", with.join(", "))
        }
        MassEditProblem::DuplicateRow { owner } => format!("{owner}: appears twice"),
        other => format!("{other:?}"),
    }
}
