//! Send, the progress page, Resume and Retry. A run goes on in a task of its own; the
//! page reads the batch's counts from the store, so a reload (or a restarted server)
//! shows where it stands, and a batch with deliveries pending and no run offers
//! Resume.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::context;
use owner_access::domain::{BatchId, CommunityId, DeliveryState};
use owner_access::{Error, Progress, RunControl, SendReport};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::app::{AppError, AppState, Fields};
use crate::auth::Admin;
use crate::manage::{community_id, community_name, page_context};

/// The runs this process has going or has finished, by batch.
#[derive(Default)]
pub struct Runs(Mutex<HashMap<BatchId, Run>>);

#[derive(Clone)]
struct Run {
    started: Instant,
    /// Sent by the batch before this run began (for the rate of this run).
    sent_before: usize,
    running: bool,
    /// The run's end, in words, once it ended.
    outcome: Option<String>,
}

impl Runs {
    fn get(&self, batch: &BatchId) -> Option<Run> {
        self.0.lock().expect("not poisoned").get(batch).cloned()
    }
}

/// Starts a run in its own task and waits only until the batch is stored (the first
/// progress event names it), so the page can follow it.
async fn start_run<F, Fut>(
    state: &AppState,
    known: Option<BatchId>,
    run: F,
) -> Result<BatchId, AppError>
where
    F: FnOnce(RunControl) -> Fut,
    Fut: Future<Output = owner_access::Result<SendReport>> + Send + 'static,
{
    let sent_before = match &known {
        Some(batch) => {
            state
                .service
                .store()
                .delivery_counts(batch)
                .await
                .map_err(Error::store)?
                .sent
        }
        None => 0,
    };
    let (tx, rx) = oneshot::channel::<BatchId>();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let seen: Arc<Mutex<Option<BatchId>>> = Arc::default();
    let noted = seen.clone();
    let app = state.clone();
    // The run is noted as running when the batch is stored, before any message, so
    // its end (in the task below) always finds the entry.
    let control = RunControl::new().with_progress(move |event| {
        if let Progress::Queued { batch, .. } = event
            && let Some(tx) = tx.lock().expect("not poisoned").take()
        {
            app.runs.0.lock().expect("not poisoned").insert(
                batch.clone(),
                Run {
                    started: Instant::now(),
                    sent_before,
                    running: true,
                    outcome: None,
                },
            );
            *noted.lock().expect("not poisoned") = Some(batch.clone());
            let _ = tx.send(batch.clone());
        }
    });
    let future = run(control);
    let app = state.clone();
    let task = tokio::spawn(async move {
        let result = future.await;
        let batch = seen.lock().expect("not poisoned").clone();
        if let Some(batch) = batch
            && let Some(run) = app.runs.0.lock().expect("not poisoned").get_mut(&batch)
        {
            run.running = false;
            run.outcome = Some(match &result {
                Ok(report) => report_words(report),
                Err(e) => format!("the run ended with an error: {e}"),
            });
        }
        result
    });
    let batch = match rx.await {
        Ok(batch) => batch,
        // The run ended before it stored anything: its error says why.
        Err(_) => match task.await {
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(report)) => match report.batch {
                Some(batch) => batch,
                None => return Err(AppError::BadRequest("nothing to send".into())),
            },
            Err(e) => return Err(AppError::Internal(e.to_string())),
        },
    };
    Ok(batch)
}

fn report_words(report: &SendReport) -> String {
    let mut line = format!(
        "{} sent, {} failed, {} skipped, {} pending",
        report.sent,
        report.failed.len(),
        report.skipped.len(),
        report.pending
    );
    if let Some(stopped) = &report.stopped {
        line.push_str(&format!("; stopped: {stopped}"));
    }
    line
}

/// Send on the review page: the reviewed invite goes out as a batch.
pub async fn send(
    State(state): State<AppState>,
    admin: Admin,
    Path(workspace_id): Path<String>,
    fields: Fields,
) -> Result<Response, AppError> {
    admin.check(&fields)?;
    let workspace = state.workspaces.get(&workspace_id)?;
    let Some(review) = workspace.review.clone() else {
        return Ok(Redirect::to(&format!("/compose/{workspace_id}")).into_response());
    };
    let community = workspace.community.clone();
    let app = state.clone();
    let batch = start_run(&state, None, move |control| async move {
        app.service.send_with(review, control).await
    })
    .await?;
    state.workspaces.close(&workspace_id);
    Ok(Redirect::to(&format!("/c/{community}/batches/{batch}")).into_response())
}

fn batch_id(raw: &str) -> Result<BatchId, AppError> {
    BatchId::new(raw).map_err(|_| AppError::NotFound(format!("batch `{raw}` not found")))
}

/// The batch, checked to be the community's.
async fn batch_of(
    state: &AppState,
    community: &CommunityId,
    raw: &str,
) -> Result<BatchId, AppError> {
    let id = batch_id(raw)?;
    match state
        .service
        .store()
        .batch(&id)
        .await
        .map_err(Error::store)?
    {
        Some(b) if &b.community == community => Ok(id),
        _ => Err(AppError::NotFound(format!("batch `{raw}` not found"))),
    }
}

#[derive(Serialize)]
pub struct Status {
    total: usize,
    sent: usize,
    failed: usize,
    skipped: usize,
    pending: usize,
    running: bool,
    per_second: Option<String>,
    outcome: Option<String>,
}

async fn status(state: &AppState, batch: &BatchId) -> Result<Status, AppError> {
    let counts = state
        .service
        .store()
        .delivery_counts(batch)
        .await
        .map_err(Error::store)?;
    let run = state.runs.get(batch);
    let running = run.as_ref().is_some_and(|r| r.running);
    let per_second = run.as_ref().and_then(|r| {
        let secs = r.started.elapsed().as_secs_f64();
        let sent = counts.sent.saturating_sub(r.sent_before);
        (secs > 0.0 && sent > 0).then(|| format!("{:.0}", sent as f64 / secs))
    });
    Ok(Status {
        total: counts.total(),
        sent: counts.sent,
        failed: counts.failed,
        skipped: counts.skipped,
        pending: counts.pending + counts.claimed,
        running,
        per_second,
        outcome: run.and_then(|r| r.outcome),
    })
}

/// What the page's script polls.
pub async fn progress(
    State(state): State<AppState>,
    _admin: Admin,
    Path((community, batch)): Path<(String, String)>,
) -> Result<Json<Status>, AppError> {
    let community = community_id(&community)?;
    let batch = batch_of(&state, &community, &batch).await?;
    Ok(Json(status(&state, &batch).await?))
}

#[derive(Serialize)]
struct FailedLine {
    owner: String,
    to: String,
    error: String,
}

/// Sending: the counts (live while the run goes on), Resume for a batch left pending
/// with no run, failed owners with the error and Retry.
pub async fn page(
    State(state): State<AppState>,
    admin: Admin,
    Path((community, batch)): Path<(String, String)>,
) -> Result<Html<String>, AppError> {
    let id = community_id(&community)?;
    let name = community_name(&state, &id).await?;
    let batch = batch_of(&state, &id, &batch).await?;
    let status = status(&state, &batch).await?;
    let failed: Vec<FailedLine> = state
        .service
        .store()
        .failed_deliveries(&batch)
        .await
        .map_err(Error::store)?
        .into_iter()
        .map(|d| FailedLine {
            owner: d.owner.to_string(),
            to: d.to.to_string(),
            error: match &d.state {
                DeliveryState::Failed { error, .. } => error.clone(),
                other => format!("{other:?}"),
            },
        })
        .collect();
    let stored = state
        .service
        .store()
        .batch(&batch)
        .await
        .map_err(Error::store)?;
    let subject = stored.map(|b| b.invite.subject).unwrap_or_default();
    let ctx = page_context(&admin, &state, &id, &name);
    state.render(
        "batch.html",
        context! {
            batch => batch.to_string(),
            subject => subject,
            status => status,
            failed => failed,
            ..ctx
        },
    )
}

/// Resume: sends what is pending with the batch's stored message.
pub async fn resume(
    State(state): State<AppState>,
    admin: Admin,
    Path((community, batch)): Path<(String, String)>,
    fields: Fields,
) -> Result<Response, AppError> {
    rerun(state, admin, &community, &batch, fields, Rerun::Resume).await
}

/// Retry: the owners whose delivery failed, once more.
pub async fn retry(
    State(state): State<AppState>,
    admin: Admin,
    Path((community, batch)): Path<(String, String)>,
    fields: Fields,
) -> Result<Response, AppError> {
    rerun(state, admin, &community, &batch, fields, Rerun::RetryFailed).await
}

/// A new run of a stored batch.
enum Rerun {
    Resume,
    RetryFailed,
}

/// Starts a run of a stored batch of the community, then follows it on its page.
async fn rerun(
    state: AppState,
    admin: Admin,
    community: &str,
    batch: &str,
    fields: Fields,
    how: Rerun,
) -> Result<Response, AppError> {
    admin.check(&fields)?;
    let id = community_id(community)?;
    let batch = batch_of(&state, &id, batch).await?;
    let app = state.clone();
    let b = batch.clone();
    start_run(&state, Some(batch.clone()), move |control| async move {
        match how {
            Rerun::Resume => app.service.resume_with(&b, control).await,
            Rerun::RetryFailed => app.service.retry_failed(&b, control).await,
        }
    })
    .await?;
    Ok(Redirect::to(&format!("/c/{id}/batches/{batch}")).into_response())
}
