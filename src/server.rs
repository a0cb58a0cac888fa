//! The HTTP listener: routes of every frontend on one port, body limits, and the
//! response helpers the frontends share.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use salvo::conn::Acceptor;
use salvo::conn::tcp::TcpAcceptor;
use salvo::http::{ParseError, StatusCode};
use salvo::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::gateway::auth::Caller;
use crate::gateway::cache::CacheControl;
use crate::ir::{Error, ErrorKind};
use crate::protocol::frames::Coalesce;
use crate::protocol::{ollama, openai};
use crate::telemetry::Exchange;
use crate::telemetry::exchange::{Observer, route_of};
use tracing_futures::Instrument;

/// Everything a request handler needs.
pub struct App {
    pub config: Config,
    pub gateway: Gateway,
    /// What every request's exchange reports to.
    pub observer: Observer,
    /// For pass-through calls (model management forwarded to a fallback Ollama).
    pub http: reqwest::Client,
}

impl App {
    pub fn new(config: Config) -> Result<Arc<Self>, String> {
        let gateway = Gateway::new(&config)?;
        gateway.start_checks();
        let http = reqwest::Client::builder()
            .connect_timeout(config.upstream.connect_timeout())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let observer = Observer {
            metrics: gateway.metrics.clone(),
            access_log: config.log.access,
        };
        Ok(Arc::new(Self {
            config,
            gateway,
            observer,
            http,
        }))
    }

    /// Whether `presented` is the configured metrics token (compared in constant time).
    pub fn is_metrics_token(&self, presented: Option<&str>) -> bool {
        let wanted = &self.config.metrics.token;
        !wanted.is_empty()
            && presented.is_some_and(|p| bool::from(subtle::ConstantTimeEq::ct_eq(p.as_bytes(), wanted.as_bytes())))
    }

    /// Where Ollama model management goes: the configured fallback, else the first
    /// channel that is an Ollama.
    pub fn fallback_url(&self) -> Option<String> {
        self.config
            .ollama
            .fallback_url
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| {
                self.config
                    .channels()
                    .into_iter()
                    .find(|c| c.kind == crate::config::UpstreamKind::Ollama)
                    .map(|c| c.url)
            })
    }
}

/// The app a handler runs in.
pub fn app(depot: &Depot) -> Arc<App> {
    depot
        .get_typed::<Arc<App>>()
        .expect("the app is injected by the root router")
        .clone()
}

/// Who is calling, as the auth hoop found out (anonymous where no hoop ran).
pub fn caller(depot: &Depot) -> Caller {
    depot
        .get::<Caller>(CALLER)
        .cloned()
        .unwrap_or_else(|_| Caller::anonymous("openai"))
}

const CALLER: &str = "diglot.caller";
const EXCHANGE: &str = "diglot.exchange";

/// Every route, at the root and under the configured base path.
pub fn router(app: Arc<App>) -> Router {
    let base = app.config.base_path();
    let metrics = app.config.metrics.enabled;
    let mut root = Router::new()
        .hoop(affix_state::inject(app))
        .hoop(observe)
        .hoop(authenticate);
    let mut prefixes = vec![String::new()];
    if !base.is_empty() {
        prefixes.push(base);
    }
    for prefix in prefixes {
        let at = |path: &str| match format!("{prefix}{path}").trim_start_matches('/') {
            "" => Router::new(),
            path => Router::with_path(path.to_owned()),
        };
        root = root.push(at("").get(ollama::server::running).head(ollama::server::running));
        for router in ollama::server::routes() {
            root = root.push(at("").push(router));
        }
        root = root.push(at("/v1").get(openai::server::connection_test));
        for (v1, bare) in openai::server::routes().into_iter().zip(openai::server::routes()) {
            root = root.push(at("/v1").push(v1)).push(at("").push(bare));
        }
    }
    root = root.push(Router::with_path("health").get(health));
    if metrics {
        root = root.push(Router::with_path("metrics").get(prometheus));
    }
    root.push(Router::with_path("{**rest}").goal(no_route))
}

/// Opens the request's exchange (server span, access line, HTTP metrics) and runs the
/// rest inside its span. A streamed answer keeps the exchange open until it ends.
#[handler]
async fn observe(req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
    let app = app(depot);
    let base = app.config.base_path();
    let path = req.uri().path();
    let exchange = Exchange::start(
        &app.observer,
        frontend_of(path, &base),
        req.method().as_str(),
        path,
        route_of(path, &base),
        req.headers(),
    );
    depot.insert(EXCHANGE, exchange.clone());
    let span = exchange.span().clone();
    ctrl.call_next(req, depot, res).instrument(span).await;
    let status = res.status_code.map_or(200, |s| s.as_u16());
    exchange.responded(status, res.body.is_stream());
    if let Some(cache) = exchange.cache_status_shown() {
        let _ = res.add_header("x-diglot-cache", cache, true);
    }
}

/// `GET /metrics` (Prometheus). With `metrics.token` set, scrapers present it; without,
/// it is open while authentication is off and for admins only when tokens are required.
#[handler]
async fn prometheus(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let app = app(depot);
    let presented = crate::gateway::auth::presented_token(
        req.headers().get("authorization").and_then(|v| v.to_str().ok()),
        None,
        None,
    );
    let caller = caller(depot);
    let by_admin = caller.is_admin() && (app.config.metrics.token.is_empty() || caller.token.is_some());
    let allowed = app.is_metrics_token(presented.as_deref()) || by_admin;
    if !allowed {
        let error = Error::new(
            ErrorKind::Unauthorized,
            "the metrics need the metrics token or an admin token: send it as `Authorization: Bearer TOKEN`",
        );
        openai::server::write_error(res, &error);
        return;
    }
    let text = app.gateway.metrics_text();
    write_bytes(
        res,
        200,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        text,
    );
}

/// 200 while at least one channel can take requests, else 503. Each channel's state
/// (names, URLs, errors) only for admins, or for everyone when authentication is off.
#[handler]
async fn health(depot: &mut Depot, res: &mut Response) {
    let (usable, mut report) = app(depot).gateway.health();
    if !caller(depot).is_admin()
        && let Some(report) = report.as_object_mut()
    {
        report.remove("channels");
    }
    write_json(res, if usable { 200 } else { 503 }, &report);
}

/// Paths anyone may call: liveness probes and what clients ask before they know of a
/// token (`/`, `/api/version`, `GET /v1`).
fn is_public(path: &str, base: &str) -> bool {
    let path = path
        .strip_prefix(base)
        .filter(|p| p.is_empty() || p.starts_with('/'))
        .unwrap_or(path);
    matches!(path, "" | "/" | "/api/version" | "/v1" | "/v1/")
}

/// `/health` answers everyone (details for admins): liveness probes come from anywhere.
fn is_health(path: &str) -> bool {
    path == "/health" || path.ends_with("/health")
}

/// The API a path belongs to, for the shape of its errors and for usage records.
fn frontend_of(path: &str, base: &str) -> &'static str {
    let path = path.strip_prefix(base).unwrap_or(path);
    if path.starts_with("/api/") { "ollama" } else { "openai" }
}

/// Checks the caller's address and token before any handler runs, and answers 401/403 in
/// the protocol of the path.
#[handler]
async fn authenticate(req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
    let app = app(depot);
    let base = app.config.base_path();
    let path = req.uri().path().to_owned();
    let frontend = frontend_of(&path, &base);
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let peer = req
        .remote_addr()
        .clone()
        .into_std()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let ip = app.gateway.auth.client_ip(peer, header("x-forwarded-for"));
    let token = crate::gateway::auth::presented_token(header("authorization"), header("x-api-key"), header("api-key"));
    // A scraper's metrics token is not an API token: only the address rules apply.
    let result = if path == "/metrics" && app.is_metrics_token(token.as_deref()) {
        app.gateway
            .auth
            .check_ip(ip)
            .map(|()| Caller::anonymous(frontend).with_ip(ip).not_admin())
    } else {
        app.gateway.auth.authenticate(ip, token.as_deref(), frontend)
    };
    let exchange = depot.get::<Arc<Exchange>>(EXCHANGE).ok().cloned();
    let cache = CacheControl::from_header(header("cache-control"));
    match result {
        Ok(caller) => depot.insert(CALLER, Caller { cache, ..caller }.with_exchange(exchange)),
        // Public paths and liveness probes still answer (a bad token there is simply
        // anonymous); `/metrics` checks its own token, but not for refused addresses.
        Err(error)
            if is_public(&path, &base)
                || is_health(&path)
                || (path == "/metrics" && error.kind == ErrorKind::Unauthorized) =>
        {
            depot.insert(
                CALLER,
                Caller::anonymous(frontend)
                    .with_ip(ip)
                    .not_admin()
                    .with_exchange(exchange),
            )
        }
        Err(error) => {
            ctrl.skip_rest();
            if frontend == "ollama" {
                ollama::server::write_error(res, &error, "");
            } else {
                openai::server::write_error(res, &error);
            }
            return;
        }
    };
}

#[handler]
async fn no_route(req: &mut Request, res: &mut Response) {
    let error = Error::new(
        ErrorKind::NotFound,
        format!("diglot has no route for {} {}", req.method(), req.uri().path()),
    );
    openai::server::write_error(res, &error);
}

/// Binds `addr` with `TCP_NODELAY` on every accepted socket (they inherit it from the
/// listener): without it each small streamed chunk can wait ~40 ms for Nagle.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpAcceptor> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    TcpAcceptor::try_from(socket.listen(1024)?)
}

/// Reads and parses a JSON body within the size limit, naming the field at fault.
pub async fn read_json<T: DeserializeOwned>(req: &mut Request, limit: usize) -> Result<T, Error> {
    let body = req.payload_with_max_size(limit).await.map_err(|e| match e {
        ParseError::PayloadTooLarge => Error::new(
            ErrorKind::PayloadTooLarge,
            format!("the request body is larger than the {limit}-byte limit (max_body_bytes)"),
        ),
        other => Error::bad_request(format!("could not read the request body: {other}")),
    })?;
    parse_json(body)
}

pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            Error::bad_request(format!("the request body is not valid JSON: {inner}"))
        } else if path == "." {
            Error::bad_request(format!("invalid request: {inner}"))
        } else {
            Error::invalid_field(&path, format!("invalid '{path}': {inner}"))
        }
    })
}

pub fn write_json(res: &mut Response, status: u16, body: &impl Serialize) {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    write_bytes(res, status, "application/json", bytes);
}

/// `Retry-After` in whole seconds (rounded up) when the error says when to come back,
/// and any other headers it carries (`x-ratelimit-*`).
pub fn error_headers(res: &mut Response, error: &Error) {
    if let Some(after) = error.retry_after {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        let _ = res.add_header("retry-after", secs.max(1).to_string(), true);
    }
    for (name, value) in &error.headers {
        if let Ok(name) = salvo::http::HeaderName::try_from(name.as_str()) {
            let _ = res.add_header(name, value.clone(), true);
        }
    }
}

pub fn write_bytes(res: &mut Response, status: u16, content_type: &'static str, body: impl Into<Bytes>) {
    res.status_code(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    let _ = res.add_header("content-type", content_type, true);
    res.body(body.into());
}

/// Sends each item as soon as it exists; dropping the response (a client hang-up) drops
/// the stream and with it the upstream call. Frames that are ready together (the events
/// translated from one upstream read) leave in one write instead of one syscall each.
pub fn write_stream<S>(res: &mut Response, content_type: &'static str, stream: S)
where
    S: Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    res.status_code(StatusCode::OK);
    let _ = res.add_header("content-type", content_type, true);
    let _ = res.add_header("cache-control", "no-cache", true);
    let _ = res.add_header("x-accel-buffering", "no", true);
    res.stream(Coalesce::new(Box::pin(stream)));
}

/// Serves until SIGINT or SIGTERM, then lets open streams finish for a while.
pub async fn serve(acceptor: TcpAcceptor, app: Arc<App>) {
    let server = Server::new(acceptor);
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down; waiting up to 30 s for open requests");
        handle.stop_graceful(std::time::Duration::from_secs(30));
    });
    server.serve(router(app.clone())).await;
    // Every request has ended: write the usage records still queued.
    app.gateway.usage.flush().await;
    tracing::info!("usage records flushed; stopped");
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Starts diglot on `config.listen` in the background and returns the bound address
/// (port 0 picks a free one). For tests, examples and embedding.
pub async fn spawn(config: Config) -> Result<SocketAddr, String> {
    let addr = config.listen_addr().map_err(|e| e.to_string())?;
    let app = App::new(config)?;
    let acceptor = bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = acceptor.holdings()[0]
        .local_addr
        .clone()
        .into_std()
        .ok_or("the listener has no IP address")?;
    tokio::spawn(Server::new(acceptor).serve(router(app)));
    Ok(local)
}
