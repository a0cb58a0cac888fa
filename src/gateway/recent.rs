//! The models used lately, for `/api/ps`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How long a model counts as "running" for `/api/ps` after its last use (Ollama's
/// default keep-alive).
pub const RECENT_USE: Duration = Duration::from_secs(300);

/// Models used lately (client name → unix time of last use), for `/api/ps`. A map under
/// a lock: the use of a known model is one lookup, where a cache insert per request cost
/// about 2 % of a translated request's CPU.
#[derive(Default)]
pub(super) struct RecentModels(Mutex<HashMap<String, i64>>);

impl RecentModels {
    const MAX_MODELS: usize = 1024;

    pub(super) fn used(&self, model: &str) {
        let now = chrono::Utc::now().timestamp();
        let mut models = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = models.get_mut(model) {
            *at = now;
            return;
        }
        if models.len() >= Self::MAX_MODELS {
            Self::forget_stale(&mut models, now);
        }
        if models.len() < Self::MAX_MODELS {
            models.insert(model.to_owned(), now);
        }
    }

    pub(super) fn list(&self) -> Vec<(String, i64)> {
        let now = chrono::Utc::now().timestamp();
        let mut models = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Self::forget_stale(&mut models, now);
        models.iter().map(|(name, at)| (name.clone(), *at)).collect()
    }

    fn forget_stale(models: &mut HashMap<String, i64>, now: i64) {
        models.retain(|_, at| now - *at < RECENT_USE.as_secs() as i64);
    }
}
