//! The bearer token: where it comes from, and the middleware that asks for it.
//!
//! The token is `LOOPD_TOKEN`, or the content of `<state_dir>/token`, which the first daemon
//! generates with mode 0600. It is required for every request that changes state and, when the
//! API is bound to a non-loopback address, for every request. It is never logged: the type that
//! holds it prints as `Token(***)`.
//!
//! The dashboard signs a browser in with a cookie (`loopd_session`, HttpOnly, SameSite=Strict)
//! whose value is derived from the token. The cookie alone lets a browser read; it changes state
//! only in the dashboard's own JSON requests from the same origin (see [`cross_site`]), so a
//! form or a `text/plain` POST from another site changes nothing, cookie or not.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, Code};

/// The file under the state directory that holds the generated token.
pub const TOKEN_FILE: &str = "token";

/// A secret that never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    /// A token with this value.
    pub fn new(value: &str) -> Self {
        Token(value.trim().into())
    }

    /// The secret itself, for an `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares in time independent of where the first difference is.
    fn matches(&self, offered: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), offered.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            diff |= (*x ^ b.get(i).copied().unwrap_or(0)) as usize;
        }
        diff == 0
    }
}

/// `LOOPD_TOKEN` if set, else the state directory's token file, generated (0600) if missing.
pub fn load_or_create(state_dir: &Path) -> std::io::Result<Token> {
    if let Some(t) = std::env::var("LOOPD_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return Ok(Token::new(&t));
    }
    let path = state_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(Token::new(&t)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut bytes)
    })?;
    let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = state_dir.join(format!("{TOKEN_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(value.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(Token::new(&value))
}

/// The token a client should send: `LOOPD_TOKEN`, else the state directory's token file.
pub fn client_token(state_dir: Option<&Path>) -> Option<Token> {
    if let Ok(t) = std::env::var("LOOPD_TOKEN") {
        if !t.trim().is_empty() {
            return Some(Token::new(&t));
        }
    }
    let text = std::fs::read_to_string(state_dir?.join(TOKEN_FILE)).ok()?;
    (!text.trim().is_empty()).then(|| Token::new(&text))
}

/// What the middleware needs to decide.
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    /// The daemon's token.
    pub token: Token,
    /// True when bound to a non-loopback address: every request needs the token.
    pub everything: bool,
}

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "loopd_session";
/// The header a dashboard page sends with every change it asks for: a cross-site form cannot
/// set it, and a cross-site `fetch` that sets it needs a CORS preflight loopd never answers.
pub const DASHBOARD_HEADER: &str = "x-loopd-request";

impl AuthPolicy {
    /// The session cookie's value: an HMAC of a fixed label under the token, so the cookie
    /// never holds the token, and changing the token ends every session.
    pub fn session_value(&self) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(self.token.expose().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(b"loopd dashboard session v1");
        hex::encode(mac.finalize().into_bytes())
    }

    /// The `Set-Cookie` value that signs a browser in.
    pub fn session_cookie(&self) -> String {
        format!(
            "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
            self.session_value()
        )
    }

    /// Whether `offered` is the token (time independent of where it differs).
    pub fn is_token(&self, offered: &str) -> bool {
        self.token.matches(offered.trim())
    }
}

/// The `Set-Cookie` value that signs a browser out.
pub fn expired_session_cookie() -> String {
    format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// Who sent a request, as the middleware found it; handlers read it from the extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The request carried the token, or a browser's valid session cookie.
    pub signed_in: bool,
}

/// The value of the session cookie in `Cookie` headers, if any.
fn session_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_string())
}

/// Why a browser request must not change anything: it comes from another site (by
/// `Sec-Fetch-Site`, or an `Origin` that is not this host), or it is not the dashboard's own
/// JSON request (`Content-Type: application/json` and `X-Loopd-Request: dashboard`), which is
/// what a cross-site form or a `text/plain` `fetch` sends.
pub fn cross_site(headers: &HeaderMap, needs_json: bool) -> Option<String> {
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
        return Some(format!(
            "the request comes from another site (Sec-Fetch-Site: {site})"
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin = origin.to_str().unwrap_or("");
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'));
        if origin_host.is_none() || origin_host != host {
            return Some(format!(
                "the request's Origin `{origin}` is not this host `{}`",
                host.unwrap_or("")
            ));
        }
    }
    if !needs_json {
        return None;
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    let ours = headers
        .get(DASHBOARD_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "dashboard");
    if !(json && ours) {
        return Some(
            "a change through the session cookie must be a JSON request \
             (`Content-Type: application/json`, `X-Loopd-Request: dashboard`)"
                .into(),
        );
    }
    None
}

/// Whether `path` is a dashboard page (HTML for people) rather than the API, metrics or probes.
fn is_page(path: &str) -> bool {
    !(path.starts_with("/api/")
        || path == "/api"
        || path == "/metrics"
        || path == "/healthz"
        || path == "/readyz")
}

/// Pages anyone may fetch: the sign-in form (and its sign-in request), its assets, sign-out.
fn is_open(path: &str) -> bool {
    path == "/login" || path == "/logout" || path.starts_with("/assets/")
}

/// Decides who may do what: a request with the right bearer token may do anything; a browser
/// with the session cookie may read, and change state only through the dashboard's own JSON
/// requests from the same origin; anyone may read when the API is bound to loopback. A wrong
/// token is 403, a missing one 401 (for a page: the sign-in form, with 401).
pub async fn require_token(
    State(policy): State<Arc<AuthPolicy>>,
    mut req: Request,
    next: Next,
) -> Result<Response, Response> {
    let reads = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let path = req.uri().path().to_string();
    let offered = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::to_string);
    let cookie = session_of(req.headers());
    let cookie_ok = cookie
        .as_deref()
        .is_some_and(|c| Token::new(&policy.session_value()).matches(c));
    let bearer_ok = offered.as_deref().map(|t| policy.is_token(t));
    let signed_in = bearer_ok == Some(true) || cookie_ok;
    req.extensions_mut().insert(Access { signed_in });
    if is_open(&path) {
        // Signing in or out still must not be done by another site.
        if !reads {
            if let Some(why) = cross_site(req.headers(), false) {
                return Err(ApiError::new(Code::Forbidden, why).into_response());
            }
        }
        return Ok(next.run(req).await);
    }
    if reads {
        if !policy.everything || signed_in {
            return Ok(next.run(req).await);
        }
        if bearer_ok == Some(false) {
            return Err(ApiError::new(Code::Forbidden, "wrong token").into_response());
        }
        if is_page(&path) {
            return Err(crate::dashboard::login::refused(
                "this dashboard is not bound to loopback: sign in with the token",
            ));
        }
        return Err(missing_token().into_response());
    }
    match bearer_ok {
        Some(true) => return Ok(next.run(req).await),
        Some(false) => return Err(ApiError::new(Code::Forbidden, "wrong token").into_response()),
        None => {}
    }
    if cookie.is_some() {
        if !cookie_ok {
            return Err(ApiError::new(
                Code::Unauthorized,
                "the dashboard session is not valid (the token changed?): sign in again",
            )
            .into_response());
        }
        if let Some(why) = cross_site(req.headers(), true) {
            return Err(ApiError::new(Code::Forbidden, why).into_response());
        }
        return Ok(next.run(req).await);
    }
    Err(missing_token().into_response())
}

fn missing_token() -> ApiError {
    ApiError::new(
        Code::Unauthorized,
        "this request needs `Authorization: Bearer <token>` (LOOPD_TOKEN, or the file `token` in the state directory)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_private_token_once_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        // The test must not see a LOOPD_TOKEN from the environment of whoever runs it.
        if std::env::var("LOOPD_TOKEN").is_ok() {
            return;
        }
        let first = load_or_create(dir.path()).unwrap();
        assert_eq!(first.expose().len(), 64);
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
        let second = load_or_create(dir.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(format!("{first:?}"), "Token(***)");
        assert_eq!(client_token(Some(dir.path())), Some(first));
    }

    #[test]
    fn compares_whole_tokens() {
        let t = Token::new("secret");
        assert!(t.matches("secret"));
        assert!(!t.matches("secre"));
        assert!(!t.matches("secretx"));
        assert!(!t.matches(""));
    }
}
