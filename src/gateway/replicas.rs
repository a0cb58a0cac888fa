//! What this replica takes from the others: circuit and key-bench events (Redis
//! pub/sub) and changes to the shared store (PostgreSQL notifications).

use std::sync::Arc;
use std::time::Duration;

use super::{Gateway, fleet, overlay};
use crate::store::StoreChange;

impl Gateway {
    /// Applies what other replicas learn about upstreams to this one's channels.
    pub(super) fn follow_the_fleet(self: &Arc<Self>) {
        let Some(fleet) = &self.fleet else { return };
        let gateway = Arc::downgrade(self);
        fleet.listen(move |event| {
            let Some(gateway) = gateway.upgrade() else { return };
            let live = gateway.snapshot();
            let Some(channel) = live.channels().iter().find(|c| c.name == event.channel) else {
                return;
            };
            match event.what {
                fleet::What::Opened { model, for_ms, error } => {
                    channel
                        .health
                        .adopt(model.as_deref(), Some(Duration::from_millis(for_ms)), error)
                }
                fleet::What::Closed { model } => channel.health.adopt(model.as_deref(), None, None),
                fleet::What::Benched { key, for_ms } => {
                    channel.bench_fingerprint(&key, std::time::Instant::now() + Duration::from_millis(for_ms))
                }
            }
        });
    }

    /// Follows what other replicas change in a shared store (PostgreSQL notifies each
    /// change): tokens are re-read, and the admin API's part of the configuration is read
    /// again and swapped in, so a change on one replica applies on all within moments.
    pub(super) fn follow_the_store(self: &Arc<Self>) {
        let Some(mut changes) = self.store.as_ref().and_then(|s| s.changes()) else {
            return;
        };
        let gateway = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let change = match changes.recv().await {
                    Ok(change) => change,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => StoreChange::Resync,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(gateway) = gateway.upgrade() else { return };
                let (tokens, overlay) = match &change {
                    StoreChange::Tokens => (true, false),
                    StoreChange::Documents { kind } => (false, overlay::KINDS.contains(&kind.as_str())),
                    StoreChange::Resync => (true, true),
                };
                if overlay && let Err(error) = gateway.overlay_changed().await {
                    tracing::warn!(%error, "a change another replica made to the store could not be applied");
                }
                if tokens {
                    gateway.tokens_changed().await;
                }
            }
        });
    }

    /// Reads the admin API's part of the configuration again and swaps it in, if it
    /// changed.
    async fn overlay_changed(&self) -> Result<(), String> {
        let Some(store) = &self.store else { return Ok(()) };
        let _one_at_a_time = self.reloading.lock().await;
        let running = self.live.load_full();
        let stored = overlay::read(store.as_ref()).await?;
        if stored == *running.overlay {
            return Ok(());
        }
        self.swap_in(&running, running.profile.clone(), Arc::new(stored)).await
    }
}
