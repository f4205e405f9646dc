//! The Send Message page and the review. An invite being written lives in a workspace
//! in memory (with its uploaded attachments), so that a page shown again after an
//! error loses nothing; Save as Draft stores it through the library.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::context;
use owner_access::domain::{CommunityId, DraftId, OwnerId};
use owner_access::invite::{Invite, Problem, TemplatePart};
use owner_access::{Review, Selection};
use serde::Serialize;

use crate::app::{AppError, AppState, Fields, refused_form};
use crate::auth::{Admin, random_token};
use crate::manage::{community_id, community_name, page_context};

/// Invites being written, by a random id.
#[derive(Default)]
pub struct Workspaces(Mutex<HashMap<String, Workspace>>);

#[derive(Clone)]
pub struct Workspace {
    pub community: CommunityId,
    pub invite: Invite,
    /// The latest review without problems, which Send sends.
    pub review: Option<Review>,
}

impl Workspaces {
    pub fn open(&self, community: CommunityId, invite: Invite) -> String {
        let id = random_token(16);
        self.0.lock().expect("not poisoned").insert(
            id.clone(),
            Workspace {
                community,
                invite,
                review: None,
            },
        );
        id
    }

    pub fn get(&self, id: &str) -> Result<Workspace, AppError> {
        self.0
            .lock()
            .expect("not poisoned")
            .get(id)
            .cloned()
            .ok_or_else(|| {
                AppError::NotFound(
                    "this message is no longer open (the server restarted?); saved drafts are \
                     in the activity feed"
                        .to_owned(),
                )
            })
    }

    pub fn put(&self, id: &str, workspace: Workspace) {
        self.0
            .lock()
            .expect("not poisoned")
            .insert(id.to_owned(), workspace);
    }

    pub fn close(&self, id: &str) -> Option<Workspace> {
        self.0.lock().expect("not poisoned").remove(id)
    }
}

/// Actions > Send Owner Access Invite (the ticked owners), or a row's own invite
/// button (one owner): `compose`, prefilled, on a new workspace.
pub async fn start(
    State(state): State<AppState>,
    admin: Admin,
    Path(community): Path<String>,
    fields: Fields,
) -> Result<Response, AppError> {
    admin.check(&fields)?;
    let id = community_id(&community)?;
    let ids = match fields.get("single") {
        Some(one) => vec![one],
        None => fields.all("owner"),
    };
    let owners = ids
        .into_iter()
        .map(|raw| {
            OwnerId::new(raw)
                .map_err(|_| AppError::BadRequest(format!("`{raw}` is not an owner id")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if owners.is_empty() {
        admin.flash(&state, "Select at least one owner first.");
        return Ok(Redirect::to(&format!("/c/{id}/manage")).into_response());
    }
    let invite = state.service.compose(&id, &Selection::of(owners)).await?;
    let workspace = state.workspaces.open(id, invite);
    Ok(Redirect::to(&format!("/compose/{workspace}")).into_response())
}

/// A draft from the activity feed, opened to continue.
pub async fn open_draft(
    State(state): State<AppState>,
    _admin: Admin,
    Path((community, draft)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let id = community_id(&community)?;
    let draft = DraftId::new(&draft)
        .map_err(|_| AppError::NotFound(format!("draft `{draft}` not found")))?;
    let invite = state.service.load_draft(&draft).await?;
    if invite.community != id {
        return Err(AppError::NotFound(format!("draft `{draft}` not found")));
    }
    let workspace = state.workspaces.open(id, invite);
    Ok(Redirect::to(&format!("/compose/{workspace}")).into_response())
}

#[derive(Serialize, Default)]
struct FieldProblems {
    subject: Vec<String>,
    text: Vec<String>,
    html: Vec<String>,
    reply_to: Vec<String>,
    summary_to: Vec<String>,
    from: Vec<String>,
    attachments: Vec<String>,
    general: Vec<String>,
}

/// Each problem next to the field it is about (the words are the library's).
fn by_field(problems: &[Problem]) -> FieldProblems {
    let mut out = FieldProblems::default();
    for problem in problems {
        let words = problem.to_string();
        let part = |p: &TemplatePart| match p {
            TemplatePart::Subject => "subject",
            TemplatePart::Text => "text",
            TemplatePart::Html => "html",
        };
        let slot = match problem {
            Problem::TemplateSyntax { part: p, .. }
            | Problem::UnknownField { part: p, .. }
            | Problem::MissingRegistrationLink { part: p } => part(p),
            Problem::LineBreakInHeader { .. } => "subject",
            Problem::InvalidReplyTo { .. } => "reply_to",
            Problem::InvalidSummaryTo { .. } => "summary_to",
            Problem::InvalidFrom { .. } => "from",
            Problem::AttachmentTooLarge { .. }
            | Problem::AttachmentsTooLarge { .. }
            | Problem::InvalidAttachmentName { .. }
            | Problem::InvalidContentType { .. } => "attachments",
            _ => "general",
        };
        match slot {
            "subject" => out.subject.push(words),
            "text" => out.text.push(words),
            "html" => out.html.push(words),
            "reply_to" => out.reply_to.push(words),
            "summary_to" => out.summary_to.push(words),
            "from" => out.from.push(words),
            "attachments" => out.attachments.push(words),
            _ => out.general.push(words),
        }
    }
    out
}

#[derive(Serialize)]
struct ExcludedLine {
    owner: String,
    reason: String,
}

/// The review's excluded owners, each with its reason in words.
fn excluded_lines(review: &Review) -> Vec<ExcludedLine> {
    review
        .excluded
        .iter()
        .map(|e| ExcludedLine {
            owner: e.owner.to_string(),
            reason: e.reason.to_string(),
        })
        .collect()
}

#[derive(Serialize)]
struct AttachmentLine {
    index: usize,
    name: String,
    kib: String,
}

/// Renders the Send Message page for a workspace, with the review's recipients and
/// excluded owners (a review changes nothing) and, when `problems` is given, each
/// problem next to its field.
async fn render_compose(
    state: &AppState,
    admin: &Admin,
    workspace_id: &str,
    workspace: &Workspace,
    show_problems: bool,
) -> Result<Html<String>, AppError> {
    let name = community_name(state, &workspace.community).await?;
    let review = state.service.review(&workspace.invite).await?;
    let problems = if show_problems {
        by_field(&review.problems)
    } else {
        FieldProblems::default()
    };
    let invite = &workspace.invite;
    let excluded = excluded_lines(&review);
    let attachments: Vec<AttachmentLine> = invite
        .attachments
        .iter()
        .enumerate()
        .map(|(index, a)| AttachmentLine {
            index,
            name: a.file_name.clone(),
            kib: format!("{:.1}", a.bytes.len() as f64 / 1024.0),
        })
        .collect();
    let selected: Vec<String> = invite.selection.iter().map(ToString::to_string).collect();
    let ctx = page_context(admin, state, &workspace.community, &name);
    state.render(
        "compose.html",
        context! {
            workspace => workspace_id,
            draft => invite.draft.as_ref().map(ToString::to_string),
            selected => selected,
            recipients => review.recipients.len(),
            excluded => excluded,
            subject => invite.subject,
            text_body => invite.text_body.clone().unwrap_or_default(),
            html_body => invite.html_body.clone().unwrap_or_default(),
            reply_to => invite.reply_to.clone().unwrap_or_default(),
            summary_to => invite.summary_to.clone().unwrap_or_default(),
            from => invite.from.clone().unwrap_or_else(|| state.service.settings().sender.to_string()),
            attachments => attachments,
            max_each_kib => state.limits.max_each / 1024,
            max_total_kib => state.limits.max_total / 1024,
            problems => problems,
            ..ctx
        },
    )
}

pub async fn page(
    State(state): State<AppState>,
    admin: Admin,
    Path(workspace_id): Path<String>,
) -> Result<Html<String>, AppError> {
    let workspace = state.workspaces.get(&workspace_id)?;
    render_compose(&state, &admin, &workspace_id, &workspace, false).await
}

/// Copies the page's fields into the invite: what was typed is kept whatever happens
/// next. New files are added to the attachments; ticked ones are removed.
fn apply(invite: &mut Invite, fields: &Fields) {
    let text = |name: &str| fields.get(name).map(str::to_owned);
    let optional = |name: &str| text(name).filter(|v| !v.trim().is_empty());
    if let Some(subject) = text("subject") {
        invite.subject = subject;
    }
    invite.text_body = optional("text_body");
    invite.html_body = optional("html_body");
    invite.reply_to = optional("reply_to");
    invite.summary_to = optional("summary_to");
    invite.from = optional("from");
    let remove: Vec<usize> = fields
        .all("remove_attachment")
        .iter()
        .filter_map(|i| i.parse().ok())
        .collect();
    let mut index = 0;
    invite.attachments.retain(|_| {
        let keep = !remove.contains(&index);
        index += 1;
        keep
    });
    invite.attachments.extend(fields.files.iter().cloned());
}

/// Discard, Save as Draft, Generate & Review (or only attach the chosen files).
pub async fn act(
    State(state): State<AppState>,
    admin: Admin,
    Path(workspace_id): Path<String>,
    fields: Fields,
) -> Result<Response, AppError> {
    admin.check(&fields)?;
    let mut workspace = state.workspaces.get(&workspace_id)?;
    let community = workspace.community.clone();
    match fields.get("action").unwrap_or("attach") {
        "discard" => {
            if let Some(draft) = &workspace.invite.draft {
                state.service.discard_draft(draft).await?;
            }
            state.workspaces.close(&workspace_id);
            admin.flash(&state, "The message was discarded.");
            Ok(Redirect::to(&format!("/c/{community}/manage")).into_response())
        }
        "save" => {
            apply(&mut workspace.invite, &fields);
            let draft = state.service.save_draft(&workspace.invite).await?;
            workspace.invite.draft = Some(draft.clone());
            workspace.review = None;
            state.workspaces.put(&workspace_id, workspace);
            admin.flash(
                &state,
                format!("Draft {draft} saved. Open it here to continue."),
            );
            Ok(Redirect::to(&format!("/c/{community}/activity")).into_response())
        }
        "review" => {
            apply(&mut workspace.invite, &fields);
            let review = state.service.review(&workspace.invite).await?;
            if review.is_sendable() {
                workspace.review = Some(review);
                state.workspaces.put(&workspace_id, workspace);
                Ok(Redirect::to(&format!("/compose/{workspace_id}/review")).into_response())
            } else {
                let page = show_again(&state, &admin, &workspace_id, workspace).await?;
                Ok(refused_form(page))
            }
        }
        _ => {
            apply(&mut workspace.invite, &fields);
            let page = show_again(&state, &admin, &workspace_id, workspace).await?;
            Ok(page.into_response())
        }
    }
}

/// The compose page again, with the edited message kept (its review dropped: it
/// changed) and each problem next to its field.
async fn show_again(
    state: &AppState,
    admin: &Admin,
    workspace_id: &str,
    mut workspace: Workspace,
) -> Result<Html<String>, AppError> {
    workspace.review = None;
    state.workspaces.put(workspace_id, workspace.clone());
    render_compose(state, admin, workspace_id, &workspace, true).await
}

#[derive(Serialize)]
struct RecipientLine {
    owner: String,
    email: String,
}

/// The review: recipients, excluded owners with reasons, and one owner's message with
/// a placeholder link (a preview mints no token).
pub async fn review_page(
    State(state): State<AppState>,
    admin: Admin,
    Path(workspace_id): Path<String>,
) -> Result<Response, AppError> {
    let workspace = state.workspaces.get(&workspace_id)?;
    let Some(review) = workspace.review.as_ref() else {
        return Ok(Redirect::to(&format!("/compose/{workspace_id}")).into_response());
    };
    let name = community_name(&state, &workspace.community).await?;
    let preview = match review.recipients.first() {
        Some(first) => {
            let p = state.service.preview(review, &first.owner).await?;
            Some(context! {
                owner => first.owner.to_string(),
                to => first.email.to_string(),
                subject => p.subject,
                text => p.text,
                html => p.html,
            })
        }
        None => None,
    };
    let recipients: Vec<RecipientLine> = review
        .recipients
        .iter()
        .map(|r| RecipientLine {
            owner: r.owner.to_string(),
            email: r.email.to_string(),
        })
        .collect();
    let excluded = excluded_lines(review);
    let problems: Vec<String> = review.problems.iter().map(ToString::to_string).collect();
    let ctx = page_context(&admin, &state, &workspace.community, &name);
    let page = state.render(
        "review.html",
        context! {
            workspace => workspace_id,
            subject => review.invite.subject,
            reply_to => review.invite.reply_to.clone().unwrap_or_default(),
            summary_to => review.invite.summary_to.clone().unwrap_or_default(),
            attachments => review.invite.attachments.iter().map(|a| a.file_name.clone()).collect::<Vec<_>>(),
            recipients => recipients,
            excluded => excluded,
            problems => problems,
            sendable => review.is_sendable(),
            preview => preview,
            ..ctx
        },
    )?;
    Ok(page.into_response())
}
