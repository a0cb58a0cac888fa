//! Where signed-in sessions live: in the store when there is one (so every replica knows
//! them, and a restart signs nobody out), with a short-lived copy in memory; only in
//! memory without a store. Kept by the SHA-256 of the cookie's value, never the value.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use salvo::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use crate::store::{Store, StoreChange};

/// Sign-in attempts an address may make per minute.
const ATTEMPTS_PER_MINUTE: usize = 5;

/// How long a replica trusts its copy of a stored session without hearing of a change:
/// a sign-out elsewhere reaches it within this even if the notification is lost.
const STORED_COPY: Duration = Duration::from_secs(2);

/// The store's document kind for sessions.
const KIND: &str = "session";

#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// The token's digest for a token sign-in; none for the password.
    pub token: Option<String>,
    pub csrf: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Signed-in sessions and recent sign-in attempts (those per replica).
pub struct Sessions {
    store: Option<Arc<dyn Store>>,
    live: moka::sync::Cache<String, Arc<Session>>,
    attempts: moka::sync::Cache<IpAddr, Arc<Mutex<VecDeque<Instant>>>>,
}

impl Sessions {
    pub fn new(store: Option<Arc<dyn Store>>) -> Self {
        let copy_for = match store {
            Some(_) => STORED_COPY,
            None => Duration::from_secs(366 * 86_400),
        };
        let live: moka::sync::Cache<String, Arc<Session>> = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(copy_for)
            .build();
        // A sign-out on another replica: copies go at once (PostgreSQL says so).
        if let Some(mut changes) = store.as_ref().and_then(|s| s.changes()) {
            let live = live.clone();
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    match changes.recv().await {
                        Ok(StoreChange::Documents { kind }) if kind != KIND => {}
                        Ok(StoreChange::Tokens) => {}
                        Ok(_) | Err(RecvError::Lagged(_)) => live.invalidate_all(),
                        Err(RecvError::Closed) => return,
                    }
                }
            });
        }
        Self {
            store,
            live,
            attempts: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(60))
                .build(),
        }
    }

    /// Counts an attempt from `ip`; past the limit, 429 with the seconds to wait.
    pub fn attempt(&self, ip: IpAddr) -> ApiResult<()> {
        let window = Duration::from_secs(60);
        let times = self.attempts.get_with(ip, Default::default);
        let mut times = times.lock().expect("attempts lock");
        while times.front().is_some_and(|t| t.elapsed() >= window) {
            times.pop_front();
        }
        if times.len() >= ATTEMPTS_PER_MINUTE {
            let wait = window.saturating_sub(times.front().map_or(Duration::ZERO, |t| t.elapsed()));
            return Err(ApiError {
                retry_after: Some(wait.as_secs().max(1)),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "more than {ATTEMPTS_PER_MINUTE} sign-in attempts in a minute from this address; wait and retry"
                    ),
                )
            });
        }
        times.push_back(Instant::now());
        Ok(())
    }

    /// Keeps a new session (and forgets expired ones in the store).
    pub async fn insert(&self, id: String, session: Session) -> ApiResult<()> {
        if let Some(store) = &self.store {
            let text = serde_json::to_string(&session).expect("a session serializes");
            store
                .put_document(KIND, &id, Some(&text))
                .await
                .map_err(|e| ApiError::internal(format!("cannot keep the session: {e}")))?;
            self.forget_expired(store.as_ref()).await;
        }
        self.live.insert(id, Arc::new(session));
        Ok(())
    }

    /// The unexpired session `id`, from memory or the store.
    pub async fn get(&self, id: &str) -> Option<Arc<Session>> {
        let now = chrono::Utc::now().timestamp();
        if let Some(session) = self.live.get(id) {
            return (session.expires_at > now).then_some(session);
        }
        let stored = self.store.as_ref()?.document(KIND, id).await.ok()??;
        let session: Arc<Session> = Arc::new(serde_json::from_str(&stored.value).ok()?);
        self.live.insert(id.to_owned(), session.clone());
        (session.expires_at > now).then_some(session)
    }

    /// Ends session `id` on every replica (theirs within `STORED_COPY`).
    pub async fn remove(&self, id: &str) {
        self.live.invalidate(id);
        if let Some(store) = &self.store
            && let Err(error) = store.put_document(KIND, id, None).await
        {
            tracing::warn!(%error, "a signed-out session could not be removed from the store");
        }
    }

    async fn forget_expired(&self, store: &dyn Store) {
        let now = chrono::Utc::now().timestamp();
        let Ok(all) = store.documents(KIND).await else { return };
        for stored in all {
            let expired = serde_json::from_str::<Session>(&stored.value).map_or(true, |s| s.expires_at <= now);
            if expired {
                let _ = store.put_document(KIND, &stored.key, None).await;
            }
        }
    }
}
