//! `/admin/api/logs` (the request log: filtered, paged, CSV), `/admin/api/logs/stream`
//! (the live tail) and `/admin/api/dashboard` (totals, series and top lists from the
//! store's rollups, never a scan of the records).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use salvo::oapi::extract::QueryParam;
use salvo::oapi::{ToParameters, ToSchema};
use salvo::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::tokens::store;
use super::{Admin, admin};
use crate::store::{Dimension, Step, UsageFilter, UsagePoint, UsageRecord};

/// Filters of the request log.
#[derive(Deserialize, ToParameters, Default)]
#[salvo(parameters(default_parameter_in = Query))]
pub struct LogQuery {
    /// A token's id or prefix.
    pub token: Option<String>,
    pub model: Option<String>,
    pub channel: Option<String>,
    /// openai, ollama or anthropic.
    pub frontend: Option<String>,
    /// A status class: 2xx, 3xx, 4xx or 5xx.
    pub status: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until: Option<i64>,
    /// The `next` of the page before: records older than it.
    pub before: Option<i64>,
    /// 1 to 1000; 100 by default.
    pub limit: Option<u32>,
    /// `csv` for a CSV export (all the filters apply).
    pub format: Option<String>,
}

/// One request.
#[derive(Serialize, ToSchema)]
pub struct LogEntry {
    pub id: i64,
    pub at_ms: i64,
    pub token_prefix: Option<String>,
    pub token_name: Option<String>,
    pub client_ip: Option<String>,
    pub frontend: &'static str,
    pub model: String,
    pub channel: Option<String>,
    pub upstream_model: Option<String>,
    pub status: u16,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The upstream reported no usage: the counts are diglot's estimate.
    pub estimated: bool,
    pub cache_hit: bool,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    /// Upstream attempts (failover included).
    pub attempts: u32,
}

#[derive(Serialize, ToSchema)]
pub struct LogPage {
    pub data: Vec<LogEntry>,
    /// Pass as `before` for the next (older) page; null at the end.
    pub next: Option<i64>,
}

/// The filter `query` asks for; `only_token` (a digest) narrows it to one token.
pub(super) async fn filter(admin: &Admin, query: &LogQuery, only_token: Option<&str>) -> ApiResult<UsageFilter> {
    let status_class = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            text.strip_suffix("xx")
                .and_then(|d| d.parse::<u16>().ok())
                .filter(|d| (1..=5).contains(d))
                .ok_or_else(|| ApiError::invalid("status", "status: one of 2xx, 3xx, 4xx, 5xx"))?,
        ),
    };
    let token_digest = match (only_token, query.token.as_deref().filter(|t| !t.is_empty())) {
        (Some(digest), _) => Some(digest.to_owned()),
        (None, Some(which)) => {
            let tokens = store(admin)?.tokens().await?;
            let found = tokens
                .iter()
                .find(|t| t.id.map(|id| id.to_string()).as_deref() == Some(which) || t.prefix == which)
                .ok_or_else(|| ApiError::invalid("token", format!("no token has the id or prefix '{which}'")))?;
            Some(found.digest.clone())
        }
        (None, None) => None,
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit: between 1 and 1000"));
    }
    let text = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    Ok(UsageFilter {
        token_digest,
        model: text(&query.model),
        channel: text(&query.channel),
        frontend: text(&query.frontend),
        status_class,
        since_ms: query.since,
        until_ms: query.until,
        before_id: query.before,
        limit,
    })
}

/// A page of the log as JSON, or every matching record as CSV with `format=csv`.
pub(super) async fn answer(
    admin: &Admin,
    query: &LogQuery,
    only_token: Option<&str>,
    res: &mut Response,
) -> ApiResult<()> {
    let mut filter = filter(admin, query, only_token).await?;
    let store = store(admin)?;
    let names: HashMap<String, String> = store.tokens().await?.into_iter().map(|t| (t.digest, t.name)).collect();
    if query.format.as_deref() == Some("csv") {
        let mut out = String::from(CSV_HEADER);
        filter.limit = 1000;
        loop {
            let page = store.usage_page(&filter).await?;
            for record in &page {
                out.push_str(&csv_line(&entry(record.clone(), &names)));
            }
            match page.last() {
                Some(last) if page.len() == filter.limit as usize => filter.before_id = Some(last.id),
                _ => break,
            }
        }
        let _ = res.add_header("content-type", "text/csv; charset=utf-8", true);
        let _ = res.add_header("content-disposition", "attachment; filename=\"diglot-logs.csv\"", true);
        res.body(out);
        return Ok(());
    }
    let page = store.usage_page(&filter).await?;
    let next = (page.len() == filter.limit as usize)
        .then(|| page.last().map(|r| r.id))
        .flatten();
    res.render(Json(LogPage {
        data: page.into_iter().map(|r| entry(r, &names)).collect(),
        next,
    }));
    Ok(())
}

fn entry(r: UsageRecord, names: &HashMap<String, String>) -> LogEntry {
    LogEntry {
        id: r.id,
        at_ms: r.at_ms,
        token_name: r.token_digest.as_ref().and_then(|d| names.get(d).cloned()),
        token_prefix: r.token_prefix,
        client_ip: r.client_ip,
        frontend: r.frontend,
        model: r.model,
        channel: r.channel,
        upstream_model: r.upstream_model,
        status: r.status,
        latency_ms: r.latency_ms,
        ttft_ms: r.ttft_ms,
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        estimated: r.estimated,
        cache_hit: r.cache_hit,
        request_id: r.request_id,
        trace_id: r.trace_id,
        attempts: r.attempts,
    }
}

const CSV_HEADER: &str = "id,time,token_prefix,token_name,client_ip,frontend,model,channel,upstream_model,status,\
latency_ms,ttft_ms,prompt_tokens,completion_tokens,estimated,cache_hit,request_id,trace_id,attempts\n";

/// One CSV line (RFC 4180 quoting where a field needs it).
fn csv_line(e: &LogEntry) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let opt = |s: &Option<String>| quote(s.as_deref().unwrap_or(""));
    let time = chrono::DateTime::from_timestamp_millis(e.at_ms).map_or(String::new(), |t| t.to_rfc3339());
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        e.id,
        time,
        opt(&e.token_prefix),
        opt(&e.token_name),
        opt(&e.client_ip),
        e.frontend,
        quote(&e.model),
        opt(&e.channel),
        opt(&e.upstream_model),
        e.status,
        e.latency_ms,
        e.ttft_ms.map_or(String::new(), |n| n.to_string()),
        e.prompt_tokens,
        e.completion_tokens,
        e.estimated,
        e.cache_hit,
        opt(&e.request_id),
        opt(&e.trace_id),
        e.attempts
    )
}

/// The request log, newest first: filters, pages (`next` → `before`), `format=csv`.
#[endpoint(tags("usage"), responses((status_code = 200, body = LogPage, description = "A page of the log (text/csv with format=csv)")))]
pub async fn logs(query: LogQuery, depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    answer(&admin(depot), &query, None, res).await
}

/// Each access line as it is written, as server-sent events (`data: {...}`).
#[endpoint(tags("usage"), responses((status_code = 200, description = "text/event-stream of access lines")))]
pub async fn stream(depot: &mut Depot, res: &mut Response) {
    let mut lines = admin(depot).tail.watch();
    let events = async_stream::stream! {
        // Said at once, so a client knows it is connected.
        yield Ok::<_, std::io::Error>(Bytes::from_static(b": watching\n\n"));
        loop {
            match tokio::time::timeout(Duration::from_secs(15), lines.recv()).await {
                Ok(Ok(line)) => yield Ok(Bytes::from(format!("data: {line}\n\n"))),
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(lost))) => {
                    yield Ok(Bytes::from(format!("event: lagged\ndata: {{\"lost\": {lost}}}\n\n")))
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
                // Keeps proxies from closing an idle connection.
                Err(_) => yield Ok(Bytes::from_static(b": ping\n\n")),
            }
        }
    };
    let _ = res.add_header("content-type", "text/event-stream", true);
    let _ = res.add_header("cache-control", "no-cache", true);
    res.stream(events);
}

/// Sums over a step (or the whole window) with latency and time-to-first-token
/// percentiles.
#[derive(Serialize, ToSchema)]
pub struct Point {
    /// at_ms (the step's start, unix milliseconds), requests, errors, prompt_tokens,
    /// completion_tokens, cache_hits.
    #[serde(flatten)]
    #[salvo(schema(value_type = Object))]
    pub sums: UsagePoint,
    pub latency_p50_ms: Option<u64>,
    pub latency_p95_ms: Option<u64>,
    pub ttft_p50_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct Top {
    /// A token's prefix, a model, a channel.
    pub key: String,
    /// The token's name (tokens only).
    pub name: Option<String>,
    pub requests: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ChannelHealth {
    pub name: String,
    /// "profile" or "store".
    pub source: &'static str,
    #[salvo(schema(value_type = Object))]
    pub health: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct Dashboard {
    /// 1h, 24h, 7d or 30d.
    pub window: String,
    pub step_secs: u64,
    pub totals: Point,
    pub series: Vec<Point>,
    pub top_tokens: Vec<Top>,
    pub top_models: Vec<Top>,
    pub top_channels: Vec<Top>,
    pub channels: Vec<ChannelHealth>,
}

fn point(at_ms: i64, points: &[&UsagePoint]) -> Point {
    let mut sums = UsagePoint {
        at_ms,
        ..UsagePoint::default()
    };
    for p in points {
        sums.merge(p);
    }
    Point {
        latency_p50_ms: sums.latency.quantile(0.5),
        latency_p95_ms: sums.latency.quantile(0.95),
        ttft_p50_ms: sums.ttft.quantile(0.5),
        sums,
    }
}

/// Totals, a series and the top tokens, models and channels over the last hour, day,
/// week or month, and every channel's health; from the rollups kept as records are
/// written.
#[endpoint(tags("usage"))]
pub async fn dashboard(window: QueryParam<String, false>, depot: &mut Depot) -> ApiResult<Json<Dashboard>> {
    let admin = admin(depot);
    let window = window.into_inner().unwrap_or_else(|| "24h".into());
    let (span_secs, step, step_secs): (i64, Step, u64) = match window.as_str() {
        "1h" => (3600, Step::Minute, 60),
        "24h" => (86_400, Step::Hour, 3600),
        "7d" => (7 * 86_400, Step::Hour, 6 * 3600),
        "30d" => (30 * 86_400, Step::Hour, 86_400),
        _ => return Err(ApiError::invalid("window", "window: one of 1h, 24h, 7d, 30d")),
    };
    let store = store(&admin)?;
    let now = chrono::Utc::now().timestamp_millis();
    let since = now - span_secs * 1000;
    let (raw, tokens, models, channels, names) = tokio::try_join!(
        store.usage_series(since, now + 1, step),
        store.usage_top(since, Dimension::Token, 10),
        store.usage_top(since, Dimension::Model, 10),
        store.usage_top(since, Dimension::Channel, 10),
        store.tokens(),
    )?;
    let step_ms = step_secs as i64 * 1000;
    let mut groups: std::collections::BTreeMap<i64, Vec<&UsagePoint>> = Default::default();
    for p in &raw {
        groups.entry(p.at_ms - p.at_ms.rem_euclid(step_ms)).or_default().push(p);
    }
    let series = groups.iter().map(|(at, points)| point(*at, points)).collect();
    let totals = point(since, &raw.iter().collect::<Vec<_>>());
    let names: HashMap<String, String> = names.into_iter().map(|t| (t.digest, t.name)).collect();
    let top = |list: Vec<crate::store::UsageTop>| {
        list.into_iter()
            .map(|t| Top {
                name: t.token_digest.as_ref().and_then(|d| names.get(d).cloned()),
                key: t.key,
                requests: t.requests,
                errors: t.errors,
                prompt_tokens: t.prompt_tokens,
                completion_tokens: t.completion_tokens,
            })
            .collect()
    };
    let live = admin.gateway.snapshot();
    Ok(Json(Dashboard {
        window,
        step_secs,
        totals,
        series,
        top_tokens: top(tokens),
        top_models: top(models),
        top_channels: top(channels),
        channels: live
            .channels()
            .iter()
            .map(|c| ChannelHealth {
                source: if live.overlay.channels.iter().any(|o| o.name == c.name) {
                    "store"
                } else {
                    "profile"
                },
                name: c.name.clone(),
                health: c.health.report(),
            })
            .collect(),
    }))
}
