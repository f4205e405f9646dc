//! The owner's registration page, the only one open without sign-in. GET shows the
//! owner's name and a button and changes nothing (`verify`: mail scanners open
//! links); POST completes the registration once (`redeem`). Every bad link gets the
//! same message, and the token is never written to any log (this server logs no
//! request).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use minijinja::context;
use owner_access::Error;
use serde::Deserialize;

use crate::app::{AppError, AppState, Fields};

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// The one message for unknown, expired, revoked and used links: the library's.
fn invalid(state: &AppState, error: &Error) -> Result<Response, AppError> {
    let page = state.render(
        "register.html",
        context! { stage => "invalid", message => error.to_string() },
    )?;
    Ok((StatusCode::NOT_FOUND, page).into_response())
}

pub async fn show(
    State(state): State<AppState>,
    Query(query): Query<TokenQuery>,
) -> Result<Response, AppError> {
    let token = query.token.unwrap_or_default();
    match state.service.verify(&token).await {
        Ok(verified) => {
            let community = state
                .service
                .directory()
                .community(&verified.owner.community)
                .await
                .map_err(Error::directory)?
                .map(|c| c.name)
                .unwrap_or_default();
            let page = state.render(
                "register.html",
                context! {
                    stage => "form",
                    token => token,
                    first_name => verified.owner.first_name,
                    full_name => verified.owner.full_name(),
                    address => verified.owner.property_address,
                    community => community,
                },
            )?;
            Ok(page.into_response())
        }
        Err(e @ Error::InvalidToken { .. }) => invalid(&state, &e),
        Err(e) => Err(e.into()),
    }
}

pub async fn complete(State(state): State<AppState>, fields: Fields) -> Result<Response, AppError> {
    let token = fields.get("token").unwrap_or_default();
    match state.service.redeem(token).await {
        Ok(registration) => {
            let page = state.render(
                "register.html",
                context! {
                    stage => "done",
                    first_name => registration.owner.first_name,
                    full_name => registration.owner.full_name(),
                },
            )?;
            Ok(page.into_response())
        }
        Err(e @ Error::InvalidToken { .. }) => invalid(&state, &e),
        Err(e) => Err(e.into()),
    }
}
