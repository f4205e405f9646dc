//! The server's state, its routes, and what every page shares: templates, the form
//! reader, errors as pages, and the security headers.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{AutoEscape, Environment, Value};
use owner_access::OwnerAccess;
use owner_access::error::with_causes;
use owner_access::invite::{Attachment, AttachmentLimits};

use crate::auth::Sessions;
use crate::compose::Workspaces;
use crate::sending::Runs;

/// Everything a handler needs; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub service: OwnerAccess,
    pub password: String,
    pub limits: AttachmentLimits,
    pub sessions: Sessions,
    pub workspaces: Workspaces,
    pub runs: Runs,
    templates: Environment<'static>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(service: OwnerAccess, password: String, limits: AttachmentLimits) -> Self {
        Self(Arc::new(Inner {
            service,
            password,
            limits,
            sessions: Sessions::default(),
            workspaces: Workspaces::default(),
            runs: Runs::default(),
            templates: templates(),
        }))
    }

    /// Renders a page; the template engine escapes every value for HTML.
    pub fn render(&self, name: &str, context: Value) -> Result<Html<String>, AppError> {
        let template = self
            .templates
            .get_template(name)
            .map_err(|e| AppError::Internal(e.to_string()))?;
        template
            .render(context)
            .map(Html)
            .map_err(|e| AppError::Internal(e.to_string()))
    }
}

/// A form sent back with what was wrong next to its fields (everything typed kept):
/// `422 Unprocessable Entity`, so a script or a test sees the refusal in the status.
pub fn refused_form(page: Html<String>) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, page).into_response()
}

fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    // Every template escapes for HTML, whatever its name.
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        (
            "communities.html",
            include_str!("templates/communities.html"),
        ),
        ("manage.html", include_str!("templates/manage.html")),
        ("compose.html", include_str!("templates/compose.html")),
        ("review.html", include_str!("templates/review.html")),
        ("batch.html", include_str!("templates/batch.html")),
        ("activity.html", include_str!("templates/activity.html")),
        ("mass_edit.html", include_str!("templates/mass_edit.html")),
        ("register.html", include_str!("templates/register.html")),
    ] {
        env.add_template(name, source).expect("the templates parse");
    }
    env
}

pub fn router(state: AppState) -> Router {
    // A form may carry attachments up to the library's total limit and a little more,
    // so that an attachment over the limit reaches the library and comes back as its
    // error next to the field, not as a refused request.
    let body_limit = state.limits.max_total.saturating_mul(2) + 1024 * 1024;
    Router::new()
        .route("/", get(crate::manage::communities))
        .route(
            "/login",
            get(crate::auth::login_page).post(crate::auth::login),
        )
        .route("/logout", post(crate::auth::logout))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
        .route("/c/{community}/manage", get(crate::manage::manage))
        .route("/c/{community}/compose", post(crate::compose::start))
        .route("/c/{community}/resend", post(crate::manage::resend))
        .route("/c/{community}/activity", get(crate::manage::activity))
        .route(
            "/c/{community}/mass-edit",
            get(crate::manage::mass_edit_page).post(crate::manage::mass_edit),
        )
        .route(
            "/c/{community}/drafts/{draft}",
            get(crate::compose::open_draft),
        )
        .route(
            "/compose/{workspace}",
            get(crate::compose::page).post(crate::compose::act),
        )
        .route(
            "/compose/{workspace}/review",
            get(crate::compose::review_page),
        )
        .route("/compose/{workspace}/send", post(crate::sending::send))
        .route("/c/{community}/batches/{batch}", get(crate::sending::page))
        .route(
            "/c/{community}/batches/{batch}/progress",
            get(crate::sending::progress),
        )
        .route(
            "/c/{community}/batches/{batch}/resume",
            post(crate::sending::resume),
        )
        .route(
            "/c/{community}/batches/{batch}/retry",
            post(crate::sending::retry),
        )
        .route(
            "/register",
            get(crate::owner_page::show).post(crate::owner_page::complete),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// On every response: no referrer (the owner's page has the token in its URL), no
/// framing by other sites, scripts and styles only from this server (the preview's
/// inline styles are the letter's own), nothing cached.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "SAMEORIGIN"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data: https:; frame-ancestors 'self'; form-action 'self'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("static/app.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("static/app.js"),
    )
}

/// A failed request, shown as a page.
#[derive(Debug)]
pub enum AppError {
    /// Not signed in: to the sign-in page.
    SignIn,
    /// A POST without the session's CSRF token.
    Csrf,
    NotFound(String),
    BadRequest(String),
    Internal(String),
}

/// The page shows the error with its causes (`the invitation store failed: SQLite
/// repository hoa.db is unavailable: database is locked`), so the admin knows whose
/// database to look at and why.
impl From<owner_access::Error> for AppError {
    fn from(error: owner_access::Error) -> Self {
        let message = with_causes(&error);
        match error {
            owner_access::Error::NotFound { .. } => AppError::NotFound(message),
            owner_access::Error::Repository { .. } => AppError::Internal(message),
            _ => AppError::BadRequest(message),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            AppError::SignIn => return Redirect::to("/login").into_response(),
            AppError::Csrf => (
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from this site (its CSRF token is \
                 missing or wrong). Go back, reload the page and try again."
                    .to_owned(),
            ),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            AppError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        };
        // A plain page that needs no template state (the error may come from there).
        let body = format!(
            "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
             <link rel=stylesheet href=/static/app.css><title>Error</title>\
             <main class=page><h1>{}</h1><p class=error id=error>{}</p>\
             <p><a href=\"/\">Communities</a></p></main>",
            status.as_u16(),
            html_escape(&message)
        );
        (status, Html(body)).into_response()
    }
}

/// Escapes text for HTML (only for the error page above; pages use the template
/// engine's escaping).
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A submitted form, urlencoded or multipart: its fields in order (a name may repeat,
/// as checkboxes do) and its uploaded files.
#[derive(Debug, Default)]
pub struct Fields {
    pairs: Vec<(String, String)>,
    pub files: Vec<Attachment>,
}

impl Fields {
    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a field.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_multipart = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("multipart/form-data"));
        let too_large = |_| {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                Html(
                    "<!doctype html><meta charset=utf-8><link rel=stylesheet href=/static/app.css>\
                     <main class=page><h1>Too large</h1><p class=error id=error>The upload is \
                     far over the attachment limits and was not read. Go back and choose a \
                     smaller file.</p></main>",
                ),
            )
                .into_response()
        };
        if !is_multipart {
            let bytes = axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|e| too_large(e.into_response()))?;
            let pairs = form_urlencoded::parse(&bytes).into_owned().collect();
            return Ok(Fields {
                pairs,
                files: Vec::new(),
            });
        }
        let mut multipart = Multipart::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let mut fields = Fields::default();
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) => return Err(too_large(e.into_response())),
            };
            let name = field.name().unwrap_or_default().to_owned();
            match field.file_name().map(str::to_owned) {
                Some(file_name) => {
                    let content_type = field
                        .content_type()
                        .unwrap_or("application/octet-stream")
                        .to_owned();
                    let bytes = field
                        .bytes()
                        .await
                        .map_err(|e| too_large(e.into_response()))?;
                    // An empty file input sends a part with no name and no bytes.
                    if !file_name.is_empty() || !bytes.is_empty() {
                        fields
                            .files
                            .push(Attachment::new(file_name, content_type, bytes.to_vec()));
                    }
                }
                None => {
                    let text = field
                        .text()
                        .await
                        .map_err(|e| too_large(e.into_response()))?;
                    fields.pairs.push((name, text));
                }
            }
        }
        Ok(fields)
    }
}
