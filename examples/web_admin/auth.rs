//! Sign-in with the admin password, sessions in memory (a cookie that is HttpOnly and
//! SameSite=Strict), a CSRF token per session that every admin POST must carry, and a
//! flash message shown once on the next page.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use minijinja::context;
use sha2::{Digest, Sha256};

use crate::app::{AppError, AppState, Fields};

const COOKIE: &str = "oa_admin";

/// `bytes` from the OS random source, URL-safe base64.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

struct Session {
    csrf: String,
    flash: Option<String>,
}

/// A signed-in manager: what every admin handler takes first. Without a valid session
/// cookie the request goes to the sign-in page and the handler never runs.
pub struct Admin {
    session: String,
    pub csrf: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let id = session_cookie(&parts.headers).ok_or(AppError::SignIn)?;
        let sessions = state.sessions.0.lock().expect("not poisoned");
        let session = sessions.get(&id).ok_or(AppError::SignIn)?;
        Ok(Admin {
            csrf: session.csrf.clone(),
            session: id,
        })
    }
}

impl Admin {
    /// Refuses a form that does not carry this session's CSRF token.
    pub fn check(&self, fields: &Fields) -> Result<(), AppError> {
        match fields.get("csrf") {
            Some(token) if same(token, &self.csrf) => Ok(()),
            _ => Err(AppError::Csrf),
        }
    }

    /// Keeps a message for the next page this session sees.
    pub fn flash(&self, state: &AppState, message: impl Into<String>) {
        if let Some(s) = state
            .sessions
            .0
            .lock()
            .expect("not poisoned")
            .get_mut(&self.session)
        {
            s.flash = Some(message.into());
        }
    }

    /// The message kept for this page, once.
    pub fn take_flash(&self, state: &AppState) -> Option<String> {
        state
            .sessions
            .0
            .lock()
            .expect("not poisoned")
            .get_mut(&self.session)
            .and_then(|s| s.flash.take())
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Compares two secrets by their hashes, so the time taken does not depend on where
/// they first differ.
fn same(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

pub async fn login_page(State(state): State<AppState>) -> Result<Html<String>, AppError> {
    state.render("login.html", context! { error => None::<String> })
}

pub async fn login(State(state): State<AppState>, fields: Fields) -> Result<Response, AppError> {
    let given = fields.get("password").unwrap_or_default();
    if !same(given, &state.password) {
        let page = state.render(
            "login.html",
            context! { error => Some("That is not the admin password.") },
        )?;
        return Ok((axum::http::StatusCode::UNAUTHORIZED, page).into_response());
    }
    let id = random_token(32);
    state.sessions.0.lock().expect("not poisoned").insert(
        id.clone(),
        Session {
            csrf: random_token(32),
            flash: None,
        },
    );
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response())
}

pub async fn logout(
    State(state): State<AppState>,
    admin: Admin,
    fields: Fields,
) -> Result<Response, AppError> {
    admin.check(&fields)?;
    state
        .sessions
        .0
        .lock()
        .expect("not poisoned")
        .remove(&admin.session);
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response())
}
