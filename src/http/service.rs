//! diglot's own routes: `/health`, `/metrics`, and the 404 for paths it does not serve
//! (405 for a method a served path does not take).

use salvo::prelude::*;

use super::request::{Call, app};
use super::respond::{write_bytes, write_error, write_json, write_openai_error};
use super::routes::{frontend_of, route_of};
use crate::config::MetricsConfig;
use crate::gateway::auth::presented_token;
use crate::ir::{Error, ErrorKind};
use crate::store::secrets;

/// 200 while at least one channel can take requests, else 503; 503 too from the moment
/// a stop begins, so balancers send no more. Each channel's state (names, URLs, errors)
/// only for admins, or for everyone when authentication is off.
#[handler]
pub async fn health(depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let (mut usable, mut report) = call.gateway.health();
    if app(depot).drain.is_stopping() {
        usable = false;
        report["status"] = "stopping".into();
    }
    if !call.caller.is_admin()
        && let Some(report) = report.as_object_mut()
    {
        report.remove("channels");
    }
    write_json(res, if usable { 200 } else { 503 }, &report);
}

/// `GET /health/live`: the process answers (for restarts by an orchestrator; a
/// replica without usable upstreams is alive, only not ready).
#[handler]
pub async fn alive(res: &mut Response) {
    write_json(res, 200, &serde_json::json!({"status": "alive"}));
}

/// `GET /health/ready`: whether a load balancer should send requests here now (a
/// usable channel, the store, Redis as configured; not while draining to stop).
#[handler]
pub async fn readiness(depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let (mut ready, mut report) = call.gateway.readiness().await;
    if app(depot).drain.is_stopping() {
        ready = false;
        report["status"] = "stopping".into();
    }
    write_json(res, if ready { 200 } else { 503 }, &report);
}

/// `GET /metrics` (Prometheus). With `metrics.token` set, scrapers present it; without,
/// it is open while authentication is off and for admins only when tokens are required.
#[handler]
pub async fn prometheus(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let presented = presented_token(
        req.headers().get("authorization").and_then(|v| v.to_str().ok()),
        None,
        None,
    );
    let metrics = &call.config().metrics;
    let by_admin = call.caller.is_admin() && (metrics.token.is_empty() || call.caller.token.is_some());
    if !(is_metrics_token(metrics, presented.as_deref()) || by_admin) {
        let error = Error::new(
            ErrorKind::Unauthorized,
            "the metrics need the metrics token or an admin token: send it as `Authorization: Bearer TOKEN`",
        );
        return write_openai_error(res, &error);
    }
    let text = app(depot).gateway.metrics_text();
    write_bytes(
        res,
        200,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        text,
    );
}

/// Whether `presented` is the configured metrics token (compared in constant time).
pub fn is_metrics_token(metrics: &MetricsConfig, presented: Option<&str>) -> bool {
    !metrics.token.is_empty() && presented.is_some_and(|p| secrets::same(p, &metrics.token))
}

/// A path diglot does not serve: 404. A path it serves, asked with another method: 405
/// with `Allow`. Either in the shape of the API the path belongs to.
#[handler]
pub async fn no_route(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let app = app(depot);
    let base = Call::of(depot).config().base_path();
    let path = req.uri().path();
    let route = route_of(&app.routes, path, &base);
    let error = match route.filter(|r| !r.methods.contains(req.method())) {
        Some(route) => {
            let allow: Vec<&str> = route.methods.iter().map(|m| m.as_str()).collect();
            let allow = allow.join(", ");
            let _ = res.add_header("allow", &allow, true);
            Error::new(
                ErrorKind::MethodNotAllowed,
                format!("{path} does not take {}: use {allow}", req.method()),
            )
        }
        None => Error::new(
            ErrorKind::NotFound,
            format!("diglot has no route for {} {path}", req.method()),
        ),
    };
    write_error(res, frontend_of(route, path, &base), &error, "");
}
