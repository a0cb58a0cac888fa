//! Stored responses (the Responses API's `store`): kept per owner (the caller's token,
//! or one shared owner with authentication off) for `[responses] ttl_days`, read back
//! for `previous_response_id`, `item_reference` inputs and `GET`, deleted on `DELETE`. Another owner's response
//! is "not found", as is one that expired.

use std::collections::HashMap;

use serde_json::Value;
use tracing::warn;

use super::Gateway;
use super::auth::Caller;
use super::live::Snapshot;
use crate::ir::{Error, ErrorKind};
use crate::store::StoredResponse;

const DAY_SECS: i64 = 24 * 60 * 60;

/// A stored response, its JSON parsed.
#[derive(Debug, Clone)]
pub struct Kept {
    pub response: Value,
    /// The request's own input items.
    pub input: Vec<Value>,
    /// The items of the turns before it.
    pub history: Vec<Value>,
}

impl Kept {
    /// What a request continuing from this response starts with: the turns before it,
    /// its input, its output.
    pub fn conversation(self) -> Vec<Value> {
        let output = match self.response.get("output") {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        self.history.into_iter().chain(self.input).chain(output).collect()
    }
}

fn owner(caller: &Caller) -> &str {
    caller.token.as_ref().map_or("", |t| t.digest.as_str())
}

fn not_found(id: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("no response with id '{id}' (it may have expired or belong to another token)"),
    )
}

fn store_failed(e: impl std::fmt::Display) -> Error {
    warn!(error = %e, "the response store failed");
    Error::internal("the response store failed; try again")
}

impl Gateway {
    /// Whether a response made now is kept: the client asked (`store`), and keeping is on.
    pub fn keeps_responses(&self, live: &Snapshot, asked: bool) -> bool {
        asked && self.store.is_some() && live.config.responses.ttl_days > 0
    }

    /// Keeps `response` (its `id` and `created_at` are read from it) for the caller.
    /// A failure is logged: the answer itself was given.
    pub async fn keep_response(
        &self,
        live: &Snapshot,
        caller: &Caller,
        response: Value,
        input: Vec<Value>,
        history: Vec<Value>,
    ) {
        let Some(store) = &self.store else { return };
        let id = response
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let created_at = response
            .get("created_at")
            .and_then(Value::as_i64)
            .unwrap_or_else(|| chrono::Utc::now().timestamp());
        let output = match response.get("output") {
            Some(Value::Array(items)) => items.as_slice(),
            _ => &[],
        };
        let items = input
            .iter()
            .chain(output)
            .filter_map(|item| Some((item.get("id")?.as_str()?.to_owned(), item.to_string())))
            .collect();
        let record = StoredResponse {
            id,
            owner: owner(caller).to_owned(),
            created_at,
            expires_at: created_at + i64::from(live.config.responses.ttl_days) * DAY_SECS,
            response: response.to_string(),
            input: Value::Array(input).to_string(),
            history: Value::Array(history).to_string(),
            items,
        };
        if let Err(e) = store.save_response(&record).await {
            warn!(error = %e, response = %record.id, "cannot keep a response");
        }
    }

    /// The caller's response `id`, if kept and not expired.
    pub async fn kept_response(&self, caller: &Caller, id: &str) -> Result<Kept, Error> {
        let Some(store) = &self.store else {
            return Err(not_found(id));
        };
        let now = chrono::Utc::now().timestamp();
        let record = store
            .response(id, owner(caller), now)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| not_found(id))?;
        let list = |text: &str| match serde_json::from_str(text) {
            Ok(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        Ok(Kept {
            response: serde_json::from_str(&record.response).map_err(store_failed)?,
            input: list(&record.input),
            history: list(&record.history),
        })
    }

    /// The caller's kept items with these ids (`item_reference` inputs), by id; ids not
    /// found are left out.
    pub async fn kept_items(&self, caller: &Caller, ids: &[String]) -> Result<HashMap<String, Value>, Error> {
        let mut found = HashMap::new();
        let Some(store) = &self.store else { return Ok(found) };
        let now = chrono::Utc::now().timestamp();
        for id in ids {
            if let Some(item) = store
                .response_item(id, owner(caller), now)
                .await
                .map_err(store_failed)?
                && let Ok(item) = serde_json::from_str(&item)
            {
                found.insert(id.clone(), item);
            }
        }
        Ok(found)
    }

    /// Deletes the caller's response `id`.
    pub async fn delete_response(&self, caller: &Caller, id: &str) -> Result<(), Error> {
        let Some(store) = &self.store else {
            return Err(not_found(id));
        };
        match store.delete_response(id, owner(caller)).await.map_err(store_failed)? {
            true => Ok(()),
            false => Err(not_found(id)),
        }
    }
}
