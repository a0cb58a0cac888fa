//! What one replica learns about an upstream, told to the others over Redis pub/sub: a
//! circuit that opened or closed, a key benched. Each replica applies it to its own
//! channel of that name, so a dead upstream found by one is skipped by all.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::Fleet;

/// One change of a channel's state, as the replica that saw it says it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The replica that saw it.
    pub from: String,
    pub channel: String,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    /// A circuit opened (the channel's, or one model's): out for `for_ms`.
    Opened {
        model: Option<String>,
        for_ms: u64,
        error: Option<String>,
    },
    /// A circuit closed: the upstream answers again.
    Closed { model: Option<String> },
    /// A key (named by its fingerprint, never itself) is left out for `for_ms`.
    Benched { key: String, for_ms: u64 },
}

impl Fleet {
    /// Tells the other replicas; best effort (a replica that misses it finds out itself).
    pub fn publish(self: &Arc<Self>, channel: &str, what: What) {
        let event = Event {
            from: self.replica.clone(),
            channel: channel.to_owned(),
            what,
        };
        let Ok(text) = serde_json::to_string(&event) else {
            return;
        };
        let publish = redis::cmd("PUBLISH").arg(self.key(&["events"])).arg(text).to_owned();
        let fleet = self.clone();
        tokio::spawn(async move { fleet.command::<i64>(&publish).await });
    }

    /// Calls `apply` with every other replica's event, for as long as the fleet lives,
    /// subscribing again whenever the connection drops.
    pub fn listen(self: &Arc<Self>, apply: impl Fn(Event) + Send + Sync + 'static) {
        let fleet = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some((client, topic, replica)) = fleet
                    .upgrade()
                    .map(|f| (f.client.clone(), f.key(&["events"]), f.replica.clone()))
                else {
                    return;
                };
                if let Ok(mut pubsub) = client.get_async_pubsub().await
                    && pubsub.subscribe(&topic).await.is_ok()
                {
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(text) = message.get_payload::<String>() else {
                            continue;
                        };
                        match serde_json::from_str::<Event>(&text) {
                            Ok(event) if event.from != replica => apply(event),
                            Ok(_) => {}
                            Err(error) => {
                                tracing::debug!(%error, "an event from the fleet that this version cannot read")
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}
