//! The live tail: each access line, as JSON, to whoever watches (the admin API's
//! `/admin/api/logs/stream`). Nothing is built while nobody watches; a watcher that
//! falls behind loses the oldest lines, never slows a request.

use std::sync::Arc;

use tokio::sync::broadcast;

/// Lines a slow watcher may fall behind by before it loses some.
const BACKLOG: usize = 1024;

#[derive(Clone)]
pub struct Tail(broadcast::Sender<Arc<str>>);

impl Default for Tail {
    fn default() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }
}

impl Tail {
    /// Whether anyone watches now.
    pub fn watched(&self) -> bool {
        self.0.receiver_count() > 0
    }

    pub fn send(&self, line: String) {
        let _ = self.0.send(line.into());
    }

    pub fn watch(&self) -> broadcast::Receiver<Arc<str>> {
        self.0.subscribe()
    }
}
