//! The bearer token: where it comes from, and the middleware that asks for it.
//!
//! The token is `LOOPD_TOKEN`, or the content of `<state_dir>/token`, which the first daemon
//! generates with mode 0600. It is required for every request that changes state and, when the
//! API is bound to a non-loopback address, for every request. It is never logged: the type that
//! holds it prints as `Token(***)`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;

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

/// Refuses a request without the token (401) or with a wrong one (403) where one is needed.
pub async fn require_token(
    State(policy): State<Arc<AuthPolicy>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let reads = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if reads && !policy.everything {
        return Ok(next.run(req).await);
    }
    let offered = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match offered {
        None => Err(ApiError::new(
            Code::Unauthorized,
            "this request needs `Authorization: Bearer <token>` (LOOPD_TOKEN, or the file `token` in the state directory)",
        )),
        Some(t) if policy.token.matches(t.trim()) => Ok(next.run(req).await),
        Some(_) => Err(ApiError::new(Code::Forbidden, "wrong token")),
    }
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
