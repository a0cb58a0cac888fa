//! The response cache: exact-match answers in memory (moka), keyed by the SHA-256 of the
//! request as it goes upstream (overrides applied, upstream model named) and of the
//! caller's token, so one tenant never gets another's answer. Bounded in bytes (LRU) and
//! by age. A cached chat is kept as its IR events, so it replays to a streaming client as
//! a stream and to any other as a whole answer, in either API.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use sha2::{Digest, Sha256};

use crate::config::CacheConfig;
use crate::ir::{ChatEvent, ChatRequest, EmbedRequest, EmbedResponse};

pub type Key = [u8; 32];

/// What a request asks of the cache, from its `Cache-Control` header.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CacheControl {
    /// `no-cache`: do not answer from the cache (a fresh answer may be stored).
    pub no_cache: bool,
    /// `no-store`: neither read nor store.
    pub no_store: bool,
}

impl CacheControl {
    pub fn from_header(value: Option<&str>) -> Self {
        let mut control = Self::default();
        for directive in value.unwrap_or_default().split(',') {
            match directive.trim().to_ascii_lowercase().as_str() {
                "no-cache" => control.no_cache = true,
                "no-store" => control.no_store = true,
                _ => {}
            }
        }
        control
    }

    fn reads(self) -> bool {
        !self.no_cache && !self.no_store
    }
}

/// What the cache does for one request: the key, whether to answer from it (not after
/// `no-cache` or `no-store`) and whether to store the answer (not after `no-store`).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub key: Key,
    pub read: bool,
    pub store: bool,
}

pub struct ResponseCache {
    config: CacheConfig,
    chats: Cache<Key, Arc<Vec<ChatEvent>>>,
    embeddings: Cache<Key, Arc<EmbedResponse>>,
}

impl ResponseCache {
    pub fn new(config: &CacheConfig) -> Self {
        // Each kind may use the whole bound: they are rarely both busy.
        fn build<V: Clone + Send + Sync + 'static>(config: &CacheConfig, weigh: fn(&Key, &V) -> u32) -> Cache<Key, V> {
            Cache::builder()
                .max_capacity(config.max_bytes)
                .weigher(weigh)
                .time_to_live(Duration::from_secs(config.ttl_secs.clamp(1, 366 * 86_400)))
                .eviction_policy(EvictionPolicy::lru())
                .build()
        }
        Self {
            config: config.clone(),
            chats: build(config, |_, events: &Arc<Vec<ChatEvent>>| weight(events_bytes(events))),
            embeddings: build(config, |_, answer: &Arc<EmbedResponse>| weight(vectors_bytes(answer))),
        }
    }

    /// How a chat prepared for its upstream is cached for `partition` (the caller's
    /// token), or `None` when it is not: chat caching off, several choices asked, or the
    /// answer would be random (neither `temperature` 0 nor a `seed`, unless
    /// `chat_nondeterministic`).
    pub fn chat_plan(&self, request: &ChatRequest, partition: &str, control: CacheControl) -> Option<Plan> {
        // Several choices are several answers to one key: not cached.
        if !self.config.chat || request.n > 1 {
            return None;
        }
        let sampling = &request.sampling;
        let deterministic = sampling.temperature == Some(0.0) || sampling.seed.is_some();
        if !deterministic && !self.config.chat_nondeterministic {
            return None;
        }
        Some(Plan {
            key: chat_key(request, partition),
            read: control.reads(),
            store: !control.no_store,
        })
    }

    pub fn embed_plan(&self, request: &EmbedRequest, partition: &str, control: CacheControl) -> Option<Plan> {
        if !self.config.embeddings {
            return None;
        }
        Some(Plan {
            key: embed_key(request, partition),
            read: control.reads(),
            store: !control.no_store,
        })
    }

    /// Whether chats are cached at all (else no request needs preparing for a lookup).
    pub fn caches_chats(&self) -> bool {
        self.config.chat
    }

    pub fn chat(&self, key: &Key) -> Option<Arc<Vec<ChatEvent>>> {
        self.chats.get(key)
    }

    pub fn store_chat(&self, key: Key, events: Vec<ChatEvent>) {
        if events_bytes(&events) <= self.config.max_bytes {
            self.chats.insert(key, Arc::new(events));
            // Evict now, so the bound holds at every moment, not eventually.
            self.chats.run_pending_tasks();
        }
    }

    /// Whether an answer of `bytes` could be kept at all (a longer one is not recorded).
    pub fn fits(&self, bytes: u64) -> bool {
        bytes <= self.config.max_bytes
    }

    pub fn embedding(&self, key: &Key) -> Option<Arc<EmbedResponse>> {
        self.embeddings.get(key)
    }

    pub fn store_embedding(&self, key: Key, answer: Arc<EmbedResponse>) {
        if vectors_bytes(&answer) <= self.config.max_bytes {
            self.embeddings.insert(key, answer);
            self.embeddings.run_pending_tasks();
        }
    }
}

fn weight(bytes: u64) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// Roughly what a cached answer occupies: its text and a fixed cost per event.
fn events_bytes(events: &[ChatEvent]) -> u64 {
    events.iter().map(event_bytes).sum()
}

/// Roughly what one cached event occupies: its text and a fixed cost per piece.
pub fn event_bytes(event: &ChatEvent) -> u64 {
    const PER_PIECE: u64 = 64;
    let text = |s: &str| s.len() as u64;
    let optional = |s: &Option<String>| s.as_deref().map_or(0, text);
    PER_PIECE
        + match event {
            ChatEvent::Text(t) | ChatEvent::Reasoning(t) => text(t),
            ChatEvent::ToolCall {
                id,
                name,
                arguments_delta,
                ..
            } => text(arguments_delta) + optional(id) + optional(name),
            ChatEvent::Logprobs(tokens) => tokens
                .iter()
                .map(|t| PER_PIECE + text(&t.token) + t.top.iter().map(|alt| PER_PIECE + text(&alt.token)).sum::<u64>())
                .sum(),
            ChatEvent::ReasoningSignature(t) | ChatEvent::StopSequence(t) => text(t),
            ChatEvent::Usage(_) | ChatEvent::Finish(_) => 0,
        }
}

fn vectors_bytes(answer: &EmbedResponse) -> u64 {
    64 + answer.vectors.iter().map(|v| 24 + 4 * v.len() as u64).sum::<u64>()
}

/// Feeds formatted text straight into a hash, with no string in between.
struct Hashing(Sha256);

impl std::fmt::Write for Hashing {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// The key of a chat: every field of the request but `stream` (a streamed and a whole
/// answer are the same answer). Destructured without `..`, so a field added to the IR
/// must be placed here, in or out of the key.
fn chat_key(request: &ChatRequest, partition: &str) -> Key {
    let ChatRequest {
        model,
        input,
        tools,
        tool_choice,
        response_format,
        sampling,
        reasoning,
        reasoning_budget,
        parallel_tool_calls,
        logprobs,
        top_logprobs,
        stream: _,
        n,
        keep_alive,
        truncate,
        shift,
        extra,
    } = request;
    let mut hash = Hashing(Sha256::new());
    let _ = write!(
        hash,
        "chat\n{partition}\n{model:?}{input:?}{tools:?}{tool_choice:?}{response_format:?}{sampling:?}\
         {reasoning:?}{reasoning_budget:?}{parallel_tool_calls:?}{logprobs:?}{top_logprobs:?}{n:?}{keep_alive:?}{truncate:?}{shift:?}{extra:?}"
    );
    hash.0.finalize().into()
}

fn embed_key(request: &EmbedRequest, partition: &str) -> Key {
    let EmbedRequest {
        model,
        inputs,
        dimensions,
        truncate,
        keep_alive,
        options,
    } = request;
    let mut hash = Hashing(Sha256::new());
    let _ = write!(
        hash,
        "embed\n{partition}\n{model:?}{inputs:?}{dimensions:?}{truncate:?}{keep_alive:?}{options:?}"
    );
    hash.0.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Sampling;

    fn config() -> CacheConfig {
        CacheConfig {
            chat: true,
            ..Default::default()
        }
    }

    #[test]
    fn keys_separate_tenants_and_ignore_only_the_stream_flag() {
        let cache = ResponseCache::new(&config());
        let request = ChatRequest {
            model: "m".into(),
            sampling: Sampling {
                temperature: Some(0.0),
                ..Default::default()
            },
            ..Default::default()
        };
        let plan = |r: &ChatRequest, who: &str| cache.chat_plan(r, who, CacheControl::default()).unwrap().key;
        let streamed = ChatRequest {
            stream: true,
            ..request.clone()
        };
        let other_model = ChatRequest {
            model: "m2".into(),
            ..request.clone()
        };
        assert_eq!(plan(&request, "alice"), plan(&streamed, "alice"));
        assert_ne!(plan(&request, "alice"), plan(&request, "bob"));
        assert_ne!(plan(&request, "alice"), plan(&other_model, "alice"));
        // Random sampling is not cached unless asked.
        let random = ChatRequest {
            sampling: Sampling::default(),
            ..request.clone()
        };
        assert!(cache.chat_plan(&random, "alice", CacheControl::default()).is_none());
        // no-store: neither read nor store; no-cache: store but do not read.
        let control = |h| CacheControl::from_header(Some(h));
        let neither = cache.chat_plan(&request, "a", control("no-store")).unwrap();
        assert!(!neither.read && !neither.store);
        let fresh = cache.chat_plan(&request, "a", control("max-age=0, No-Cache")).unwrap();
        assert!(!fresh.read && fresh.store);
    }
}
