//! What runs before every handler: the request's exchange (span, metrics, access line)
//! with the configuration snapshot it will use, admission (open connections, the body's
//! pace), then the caller's address and token.

use std::sync::Arc;

use salvo::prelude::*;
use tracing_futures::Instrument;

use super::request::{app, pace_body, read_body};
use super::respond::write_error;
use super::routes::{Access, frontend_of, route_of};
use super::service::is_metrics_token;
use crate::config::ServerConfig;
use crate::gateway::Snapshot;
use crate::gateway::auth::{Caller, presented_token};
use crate::gateway::cache::CacheControl;
use crate::ir::{Error, ErrorKind};
use crate::protocol::Frontend;
use crate::telemetry::Exchange;

/// Takes the live snapshot for the whole request, opens its exchange (server span,
/// access line, HTTP metrics) and runs the rest inside its span. A streamed answer keeps
/// the exchange open until it ends.
#[handler]
pub async fn observe(req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
    let app = app(depot);
    let live = app.gateway.snapshot();
    let base = live.config.base_path();
    let path = req.uri().path();
    let route = route_of(&app.routes, path, &base);
    let matched = Matched {
        frontend: frontend_of(route, path, &base),
        access: route.map_or(Access::Api, |r| r.access),
    };
    let exchange = Exchange::start(
        &app.observer,
        matched.frontend.as_str(),
        req.method().as_str(),
        path,
        route.map_or("", |r| r.label),
        req.headers(),
    );
    depot.insert_typed(exchange.clone());
    depot.insert_typed(live);
    depot.insert_typed(matched);
    let span = exchange.span().clone();
    ctrl.call_next(req, depot, res).instrument(span).await;
    let status = res.status_code.map_or(200, |s| s.as_u16());
    exchange.responded(status, res.body.is_stream());
    if let Some(cache) = exchange.cache_status_shown() {
        let _ = res.add_header("x-diglot-cache", cache, true);
    }
    let _ = res.add_header("x-request-id", exchange.request_id(), true);
}

/// Turns a request away with 503 (in the protocol of its path, closing its connection)
/// when its connection came past `server.max_connections`, and paces its body.
#[handler]
pub async fn admit(req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
    let app = app(depot);
    let frontend = depot.get_typed::<Matched>().map_or(Frontend::OpenAi, |m| m.frontend);
    let live = depot.get_typed::<Arc<Snapshot>>().ok().cloned();
    if let Some(live) = &live {
        if let Err(error) = head_within_bounds(req, &live.config.server) {
            ctrl.skip_rest();
            let _ = res.add_header("connection", "close", true);
            return write_error(res, frontend, &error, "");
        }
        pace_body(req, &live.config.server);
    }
    if app.connections.is_overflow(req.remote_addr().clone().into_std()) {
        ctrl.skip_rest();
        // Read first (within its bounds): closing on an unread body makes the kernel
        // reset the connection, and the client may lose the answer.
        if let Some(live) = &live {
            let _ = read_body(req, live.config.max_body_bytes).await;
        }
        let mut error = Error::new(
            ErrorKind::Unavailable,
            format!(
                "diglot is serving its most connections at once ({}); retry shortly, or raise \
                 server.max_connections (and the open-file limit, two per connection)",
                app.connections.max
            ),
        );
        error.retry_after = Some(std::time::Duration::from_secs(1));
        let _ = res.add_header("connection", "close", true);
        return write_error(res, frontend, &error, "");
    }
}

/// The request head within `server.max_headers` and `server.max_header_bytes` (counted as
/// sent: request line, and each header's name, value, `: ` and line end).
fn head_within_bounds(req: &Request, server: &ServerConfig) -> Result<(), Error> {
    let count = req.headers().len();
    if count > server.max_headers {
        return Err(Error::new(
            ErrorKind::HeadersTooLarge,
            format!(
                "the request has {count} headers, more than server.max_headers ({}); raise it in the profile to accept more",
                server.max_headers
            ),
        ));
    }
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    let bytes = line
        + req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if bytes > server.max_header_bytes {
        return Err(Error::new(
            ErrorKind::HeadersTooLarge,
            format!(
                "the request head is {bytes} bytes, more than server.max_header_bytes ({}); raise it in the profile to accept larger ones",
                server.max_header_bytes
            ),
        ));
    }
    Ok(())
}

/// What the route table says of the request's path.
#[derive(Clone, Copy)]
struct Matched {
    frontend: Frontend,
    access: Access,
}

/// Checks the caller's address and token before any handler runs, and answers 401/403 in
/// the protocol of the path.
#[handler]
pub async fn authenticate(req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
    let (Ok(live), Ok(&Matched { frontend, access })) = (
        depot.get_typed::<Arc<Snapshot>>().cloned(),
        depot.get_typed::<Matched>(),
    ) else {
        // `observe` runs first and always leaves both; without them nobody gets in.
        ctrl.skip_rest();
        let error = crate::ir::Error::internal("the request was not observed before authentication");
        return write_error(res, Frontend::OpenAi, &error, "");
    };
    if access == Access::Admin {
        // The admin API signs its callers in itself (a session or an admin token).
        return;
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let peer = req
        .remote_addr()
        .clone()
        .into_std()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let auth = &live.auth;
    let ip = auth.client_ip(peer, header("x-forwarded-for"));
    let token = presented_token(header("authorization"), header("x-api-key"), header("api-key"));
    // A scraper's metrics token is not an API token: only the address rules apply.
    let result = if access == Access::Metrics && is_metrics_token(&live.config.metrics, token.as_deref()) {
        auth.check_ip(ip)
            .map(|()| Caller::anonymous(frontend).with_ip(ip).not_admin())
    } else {
        auth.authenticate(ip, token.as_deref(), frontend).await
    };
    let exchange = depot.get_typed::<Arc<Exchange>>().ok().cloned();
    let cache = CacheControl::from_header(header("cache-control"));
    match result {
        Ok(caller) => {
            depot.insert_typed(caller.with_cache(cache).with_exchange(exchange));
        }
        // Public paths and liveness probes still answer (a bad token there is simply
        // anonymous); `/metrics` checks its own token, but not for refused addresses.
        Err(error)
            if matches!(access, Access::Public | Access::Health)
                || (access == Access::Metrics && error.kind == ErrorKind::Unauthorized) =>
        {
            depot.insert_typed(
                Caller::anonymous(frontend)
                    .with_ip(ip)
                    .not_admin()
                    .with_exchange(exchange),
            );
        }
        Err(error) => {
            ctrl.skip_rest();
            write_error(res, frontend, &error, "");
        }
    };
}
