//! Signing in and out. `POST /login` with the right token (form field `token`) sets the
//! session cookie and sends the browser to `/`; a wrong one gets the form again with 403, and
//! is logged without what was offered. The cookie's value is derived from the token
//! ([`AuthPolicy::session_value`]), never the token itself.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use maud::html;
use serde::Deserialize;

use super::layout::{self, Live, Nav, Page};
use crate::api::auth::{self, Access, AuthPolicy};

/// The sign-in form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// The daemon's token.
    token: String,
}

fn login_page(access: Access, message: Option<&str>) -> maud::Markup {
    Page {
        title: "Sign in".into(),
        nav: Nav::Login,
        access,
        alerts: 0,
        live: Live {
            quiet: true,
            ..Live::default()
        },
        body: html! {
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form #login method="post" action="/login" {
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Sign in" }
            }
            p.help {
                "The token is " code { "LOOPD_TOKEN" } ", or the file " code { "token" }
                " in the state directory. Signing in sets a cookie that only this site can send."
            }
        },
    }
    .render()
}

/// 401 with the sign-in form: what a page answers without the cookie when the API is not
/// bound to loopback.
pub fn refused(message: &str) -> Response {
    let mut resp = layout::respond(login_page(Access { signed_in: false }, Some(message)));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    resp
}

/// `GET /login`.
pub async fn form(Extension(access): Extension<Access>) -> Response {
    layout::respond(login_page(access, None))
}

/// `POST /login`: the cookie and 303 to `/`, or the form again with 403.
pub async fn sign_in(
    Extension(policy): Extension<Arc<AuthPolicy>>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let offered = match form {
        Ok(Form(f)) => f.token,
        Err(_) => {
            let mut resp = layout::respond(login_page(
                Access { signed_in: false },
                Some("expected a form with the field `token`"),
            ));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            return resp;
        }
    };
    if !policy.is_token(&offered) {
        // What was offered is never logged: it may be a real token of something else.
        tracing::warn!("dashboard sign-in refused: wrong token");
        let mut resp =
            layout::respond(login_page(Access { signed_in: false }, Some("wrong token")));
        *resp.status_mut() = StatusCode::FORBIDDEN;
        return resp;
    }
    tracing::info!("dashboard sign-in");
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&policy.session_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /logout`: the cookie expired, 303 to `/`.
pub async fn sign_out() -> Response {
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::expired_session_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
