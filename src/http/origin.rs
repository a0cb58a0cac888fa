//! What a web page may do: CORS for the origins `[cors]` allows (preflights answered on
//! every route of the route table, under the base path too), and the defenses Ollama
//! adopted for CVE-2024-28224: a foreign `Origin` is refused, a `Host` that is not a name
//! of this machine is refused while diglot listens on loopback (DNS rebinding), and a
//! browser must send JSON bodies as JSON (a `text/plain` POST needs no preflight).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use salvo::http::Method;
use salvo::http::header::{self, HeaderValue};
use salvo::prelude::*;
use wildmatch::WildMatch;

use super::request::app;
use super::respond::write_error;
use super::routes::{Access, Route, frontend_of, route_of};
use crate::config::{CorsConfig, DEFAULT_ORIGINS, ServerConfig};
use crate::gateway::Snapshot;
use crate::ir::{Error, ErrorKind};

/// Request headers a page may send: what the OpenAI, Anthropic and Ollama SDKs send
/// (names ending in `*` are prefixes).
const ALLOWED_HEADERS: &[&str] = &[
    "accept",
    "authorization",
    "content-type",
    "user-agent",
    "x-requested-with",
    "x-api-key",
    "api-key",
    "cache-control",
    "traceparent",
    "tracestate",
    "x-request-id",
    "anthropic-*",
    "openai-*",
    "x-stainless-*",
];

/// Response headers a page may read.
const EXPOSED_HEADERS: &str = "x-ratelimit-limit-requests, x-ratelimit-limit-tokens, \
     x-ratelimit-remaining-requests, x-ratelimit-remaining-tokens, x-ratelimit-reset-requests, \
     x-ratelimit-reset-tokens, retry-after, x-diglot-cache, x-request-id";

/// How long a browser may keep a preflight's answer, in seconds (Chromium caps it at 2 h).
const PREFLIGHT_MAX_AGE: &str = "7200";

/// Runs after `observe` (which leaves the snapshot) and before `authenticate`, so a
/// preflight, which carries no token, is answered here.
#[handler]
pub async fn guard(req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
    let Ok(live) = depot.get_typed::<Arc<Snapshot>>().cloned() else {
        return;
    };
    let app = app(depot);
    let config = &live.config;
    let base = config.base_path();
    let path = req.uri().path().to_owned();
    let route = route_of(&app.routes, &path, &base);
    let frontend = frontend_of(route, &path, &base);
    let header = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    let mut refuse = |res: &mut Response, error: Error| {
        ctrl.skip_rest();
        write_error(res, frontend, &error, "");
    };

    if let Ok(listen) = config.listen_addr() {
        let host = header(header::HOST).or_else(|| req.uri().authority().map(|a| a.as_str()));
        if let Some(host) = host.filter(|h| !host_allowed(h, &config.server, listen)) {
            let error = Error::new(
                ErrorKind::Forbidden,
                format!(
                    "the host '{host}' is not a name of this machine: diglot listens on loopback and \
                     answers only to its own names (a web page could reach it through DNS rebinding \
                     otherwise); add the name to [server] allowed_hosts"
                ),
            );
            return refuse(res, error);
        }
    }

    let origin = header(header::ORIGIN).map(str::to_owned);
    if let (Some(origin), Some(Access::Admin)) = (&origin, route.map(|r| r.access)) {
        // Signed-in pages may change diglot: only diglot's own pages may call, never
        // another origin, not even another port of this machine.
        let host = header(header::HOST).unwrap_or_default();
        if !same_origin(origin, host) {
            let error = Error::new(
                ErrorKind::Forbidden,
                format!("the origin '{origin}' may not call /admin: only pages diglot serves itself may"),
            );
            return refuse(res, error);
        }
        return;
    }
    if let Some(origin) = &origin {
        // diglot's own pages (the admin UI's playground calls /v1) are of the origin the
        // request was sent to, whatever name diglot is reached by, as long as a DNS
        // rebinding page cannot pass for one: on loopback the Host check above stops it;
        // elsewhere tokens must be required, or the name be an address or a listed one.
        let host = header(header::HOST).unwrap_or_default();
        let own_page = same_origin(origin, host)
            && (live.auth.required()
                || config.listen_addr().is_ok_and(|a| a.ip().is_loopback())
                || names_no_dns(host, &config.server));
        let allowed = match own_page {
            true => HeaderValue::from_str(origin).ok(),
            false => allowed_origin(&config.cors, origin),
        };
        let Some(allowed) = allowed else {
            let error = Error::new(
                ErrorKind::Forbidden,
                format!("the origin '{origin}' may not call diglot: add it to [cors] allow_origins"),
            );
            return refuse(res, error);
        };
        let headers = res.headers_mut();
        let any = allowed == "*";
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
        if !any {
            // Never with "*": any page would get the user's cookies along.
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        let preflight = req.method() == Method::OPTIONS && header(header::ACCESS_CONTROL_REQUEST_METHOD).is_some();
        if let (true, Some(route)) = (preflight, route) {
            ctrl.skip_rest();
            let requested = header(header::ACCESS_CONTROL_REQUEST_HEADERS).unwrap_or_default();
            return answer_preflight(res, route, requested);
        }
    }

    if route.is_some_and(|r| r.json_body)
        && req.method() == Method::POST
        && !body_type_ok(header(header::CONTENT_TYPE), origin.is_some())
    {
        let sent = header(header::CONTENT_TYPE).unwrap_or("none");
        let error = Error::new(
            ErrorKind::UnsupportedMediaType,
            format!(
                "the body must be JSON, sent with `Content-Type: application/json` (the request's content type: {sent})"
            ),
        );
        refuse(res, error);
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request was sent to.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = |scheme_is_https: bool| if scheme_is_https { ":443" } else { ":80" };
    let https = origin.starts_with("https://");
    let with_port = |h: &str| {
        if h.rsplit_once(':')
            .is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            && !h.ends_with(']')
        {
            h.to_ascii_lowercase()
        } else {
            format!("{}{}", h.to_ascii_lowercase(), default_port(https))
        }
    };
    !host.is_empty() && with_port(authority) == with_port(host)
}

/// 204 with the route's methods and the requested headers diglot accepts.
fn answer_preflight(res: &mut Response, route: &Route, requested: &str) {
    let methods = route.methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
    let headers = requested
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| {
            ALLOWED_HEADERS.iter().any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => h.starts_with(prefix),
                None => h == allowed,
            })
        })
        .collect::<Vec<_>>()
        .join(", ");
    res.status_code(StatusCode::NO_CONTENT);
    let out = res.headers_mut();
    if let Ok(methods) = HeaderValue::from_str(&methods) {
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    }
    if let Ok(headers) = HeaderValue::from_str(&headers)
        && !headers.is_empty()
    {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, headers);
    }
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
}

/// The `Access-Control-Allow-Origin` value for `origin`: itself when a default or listed
/// pattern matches it, `*` when only `"*"` does, none when it may not call.
fn allowed_origin(cors: &CorsConfig, origin: &str) -> Option<HeaderValue> {
    let origin_lower = origin.to_ascii_lowercase();
    let listed = DEFAULT_ORIGINS
        .iter()
        .copied()
        .chain(cors.allow_origins.iter().map(String::as_str).filter(|o| *o != "*"))
        .any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            pattern == origin_lower || (pattern.contains('*') && WildMatch::new(&pattern).matches(&origin_lower))
        });
    if listed {
        HeaderValue::from_str(origin).ok()
    } else if cors.allow_origins.iter().any(|o| o == "*") {
        Some(HeaderValue::from_static("*"))
    } else {
        None
    }
}

/// Whether `host` (a `Host` header) may be answered: always when diglot listens beyond
/// loopback (other machines use whatever name they know it by; tokens are required
/// there), else only this machine's names and addresses, as Ollama decides, and the
/// names in `[server] allowed_hosts`.
fn host_allowed(host: &str, server: &ServerConfig, listen: SocketAddr) -> bool {
    if !listen.ip().is_loopback() {
        return true;
    }
    let name = host_name(host);
    if name.is_empty() || name == "localhost" {
        return true;
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return ip == listen.ip() || is_local(ip);
    }
    if [".localhost", ".local", ".internal"]
        .iter()
        .any(|tld| name.ends_with(tld))
    {
        return true;
    }
    if gethostname::gethostname()
        .to_str()
        .is_some_and(|h| h.eq_ignore_ascii_case(&name))
    {
        return true;
    }
    server.allowed_hosts.iter().any(|allowed| {
        let allowed = allowed.to_ascii_lowercase();
        allowed == name || (allowed.contains('*') && WildMatch::new(&allowed).matches(&name))
    })
}

/// Whether `host` is an address or a name in `[server] allowed_hosts`: no foreign site's
/// DNS can make a browser send it.
fn names_no_dns(host: &str, server: &ServerConfig) -> bool {
    let name = host_name(host);
    name.parse::<IpAddr>().is_ok()
        || server
            .allowed_hosts
            .iter()
            .any(|allowed| !allowed.contains('*') && allowed.eq_ignore_ascii_case(&name))
}

/// The name or address in a `Host` value, without port, brackets or final dot, lowercased.
fn host_name(host: &str) -> String {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Addresses no DNS name of a foreign site can make a browser treat as its own page's:
/// loopback, unspecified, private and link-local ones.
fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

/// Whether a JSON endpoint reads a body of `content_type`: JSON types always; from a
/// browser (`Origin` present) nothing else, since a page may POST `text/plain`, a form
/// or no type at all without a preflight; from other callers also none and the types
/// command-line tools send by default (`curl -d` sends a form type).
fn body_type_ok(content_type: Option<&str>, from_browser: bool) -> bool {
    let essence = content_type.map(|t| t.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some(t) if t == "application/json" || (t.contains('/') && t.ends_with("+json")) => true,
        _ if from_browser => false,
        None | Some("" | "application/x-www-form-urlencoded" | "text/plain") => true,
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machines_names_pass_on_loopback() {
        let listen: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let server = ServerConfig {
            allowed_hosts: vec!["gateway.example".into(), "*.lan.example".into()],
            ..Default::default()
        };
        for host in [
            "localhost:3000",
            "127.0.0.1:3000",
            "[::1]:3000",
            "api.localhost",
            "box.local",
            "host.docker.internal:3000",
            "192.168.1.5:3000",
            "gateway.example:3000",
            "a.lan.example",
            "LOCALHOST",
        ] {
            assert!(host_allowed(host, &server, listen), "{host}");
        }
        for host in [
            "evil.example:3000",
            "8.8.8.8",
            "localhost.evil.example",
            "lan.example.evil",
        ] {
            assert!(!host_allowed(host, &server, listen), "{host}");
        }
        let everywhere: SocketAddr = "0.0.0.0:3000".parse().unwrap();
        assert!(host_allowed("evil.example", &server, everywhere));
    }

    #[test]
    fn default_origins_are_ollamas_and_star_never_echoes() {
        let cors = CorsConfig::default();
        for origin in [
            "http://localhost:5173",
            "https://127.0.0.1",
            "tauri://localhost",
            "vscode-webview://abc",
        ] {
            assert_eq!(allowed_origin(&cors, origin).unwrap(), origin, "{origin}");
        }
        for origin in ["https://evil.example", "null", "http://localhost.evil.example"] {
            assert!(allowed_origin(&cors, origin).is_none(), "{origin}");
        }
        let listed = CorsConfig {
            allow_origins: vec!["https://*.example.com".into(), "*".into()],
        };
        assert_eq!(
            allowed_origin(&listed, "https://chat.example.com").unwrap(),
            "https://chat.example.com"
        );
        assert_eq!(allowed_origin(&listed, "https://other.test").unwrap(), "*");
    }

    #[test]
    fn browsers_must_send_json_and_command_lines_may_send_forms() {
        assert!(body_type_ok(Some("application/json"), true));
        assert!(body_type_ok(Some("application/json; charset=utf-8"), true));
        assert!(body_type_ok(Some("application/vnd.api+json"), true));
        for browser_default in [
            Some("text/plain;charset=UTF-8"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            assert!(!body_type_ok(browser_default, true), "{browser_default:?}");
        }
        assert!(body_type_ok(Some("application/x-www-form-urlencoded"), false));
        assert!(body_type_ok(None, false));
        assert!(!body_type_ok(Some("application/xml"), false));
    }
}
