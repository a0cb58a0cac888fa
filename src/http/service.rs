//! diglot's own routes: `/health`, `/metrics`, and the 404 for paths it does not serve.

use salvo::prelude::*;

use super::request::{Call, app};
use super::respond::{write_bytes, write_json, write_openai_error};
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

#[handler]
pub async fn no_route(req: &mut Request, res: &mut Response) {
    let error = Error::new(
        ErrorKind::NotFound,
        format!("diglot has no route for {} {}", req.method(), req.uri().path()),
    );
    write_openai_error(res, &error);
}
