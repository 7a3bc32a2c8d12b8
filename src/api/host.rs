//! DNS rebinding: a web page on `evil.example` whose name is made to resolve to 127.0.0.1 can
//! make a browser send requests to a loopback API, and read the answers (the page's origin is
//! the attacker's name, so the browser's same-origin rule allows it). Such a request still
//! says `Host: evil.example`. An API bound to loopback therefore answers only requests whose
//! `Host` names loopback: `localhost`, `127.0.0.1` (any loopback address) or `[::1]`, with any
//! port.

use axum::extract::Request;
use axum::http::header::HOST;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, Code};

/// Whether `host` (a `Host` header value or a URI authority: `name[:port]`) names loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:7433`: the address is between the brackets.
        Some(rest) => match rest.split_once(']') {
            Some((addr, "")) => addr,
            Some((addr, port)) if port.strip_prefix(':').is_some_and(valid_port) => addr,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn valid_port(port: &str) -> bool {
    port.parse::<u16>().is_ok()
}

/// Middleware: refuses a request whose `Host` (or absolute URI authority) is missing or not
/// loopback with 403 `host_not_allowed`.
pub async fn loopback_hosts_only(req: Request, next: Next) -> Response {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
    match host {
        Some(h) if is_loopback_host(&h) => next.run(req).await,
        other => ApiError::new(
            Code::HostNotAllowed,
            format!(
                "this API is bound to loopback and answers only requests for localhost, \
                 127.0.0.1 or [::1], not {}",
                other.map_or("a request without Host".to_string(), |h| format!("`{h}`"))
            ),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_names_with_or_without_a_port() {
        for ok in [
            "localhost",
            "LOCALHOST:7433",
            "127.0.0.1",
            "127.0.0.1:1",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:7433",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7433",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1:7433",
            "[::2]:7433",
            "[::1]x",
            "[::1]7433",
            "localhost:http",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
