//! What the gateway says about itself: `/health` (every channel's state),
//! `/health/ready` (whether a load balancer should send it requests) and `/metrics`.

use std::time::Duration;

use serde_json::{Value, json};

use super::Gateway;

impl Gateway {
    /// `GET /health`: every channel's state; usable when at least one channel is.
    pub fn health(&self) -> (bool, Value) {
        let live = self.snapshot();
        let channels: Vec<Value> = live
            .router
            .channels
            .iter()
            .map(|c| {
                let mut report = c.health.report();
                report["name"] = json!(c.name);
                report["kind"] = json!(c.kind);
                report["url"] = json!(crate::protocol::upstream::shown_url(&c.url));
                report["priority"] = json!(c.priority);
                report["weight"] = json!(c.weight);
                report["keys"] = json!(c.key_count());
                report["in_flight"] = json!(c.in_flight());
                report
            })
            .collect();
        let usable = channels.iter().any(|c| c["usable"] == true);
        let status = if usable { "ok" } else { "unavailable" };
        (usable, json!({"status": status, "channels": channels}))
    }

    /// `GET /metrics`: the Prometheus text, with each channel's health read now.
    pub fn metrics_text(&self) -> String {
        let live = self.snapshot();
        let states: Vec<(String, String, bool)> = live
            .router
            .channels
            .iter()
            .map(|c| {
                let report = c.health.report();
                let state = report["state"].as_str().unwrap_or("down").to_owned();
                (c.name.clone(), state, report["usable"] == true)
            })
            .collect();
        self.metrics.render(
            states
                .iter()
                .map(|(name, state, usable)| (name.as_str(), state.as_str(), *usable)),
        )
    }

    /// For `/health/ready`: whether this replica should get traffic now. It needs a
    /// usable channel, its store, and Redis when `[redis] on_error = "reject"` (with
    /// "local" it serves on its own share of the limits, so it stays ready).
    pub async fn readiness(&self) -> (bool, Value) {
        let (channels_ok, _) = self.health();
        let store = match &self.store {
            None => None,
            Some(store) => Some(
                tokio::time::timeout(Duration::from_secs(2), store.documents("readiness"))
                    .await
                    .is_ok_and(|read| read.is_ok()),
            ),
        };
        let redis = match &self.fleet {
            None => None,
            Some(fleet) => Some(fleet.ping().await),
        };
        let redis_required = self
            .fleet
            .as_ref()
            .is_some_and(|f| f.on_error == crate::config::RedisFallback::Reject);
        let ready = channels_ok && store != Some(false) && !(redis_required && redis == Some(false));
        let state = |up: Option<bool>| match up {
            None => "not configured",
            Some(true) => "ok",
            Some(false) => "unreachable",
        };
        let report = json!({
            "status": if ready { "ready" } else { "not ready" },
            "channels": if channels_ok { "ok" } else { "none usable" },
            "store": state(store),
            "redis": state(redis),
        });
        (ready, report)
    }
}
