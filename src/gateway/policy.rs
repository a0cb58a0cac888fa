//! Per-model policy from `[models."PATTERN"]`: option defaults (used when the client sent
//! nothing) and forced values (replacing what it sent), applied to the IR so they work
//! whatever the frontend and backend; and the display names and facts the model lists
//! report.
//!
//! A pattern matches the name a client uses (an alias included) or the upstream's name
//! for the model, exactly or as a glob. Several may match: exact names before globs, the
//! client's name before the upstream's, longer (more specific) globs before shorter ones; the most
//! specific one wins, option by option.

use std::collections::BTreeMap;

use serde_json::Value;
use wildmatch::WildMatch;

use crate::config::{ModelSettings, Options};
use crate::ir::{ChatRequest, EmbedRequest};

impl Options {
    fn is_empty(&self) -> bool {
        *self == Options::default()
    }

    /// Sets what `request` lacks.
    fn fill(&self, request: &mut ChatRequest) {
        request.sampling = std::mem::take(&mut request.sampling).or(self.sampling.clone());
        request.reasoning = request.reasoning.or(self.reasoning);
        fill(&mut request.keep_alive, &self.keep_alive);
        fill(&mut request.truncate, &self.truncate);
        fill(&mut request.shift, &self.shift);
    }

    /// Replaces what `request` has.
    fn force(&self, request: &mut ChatRequest) {
        request.sampling = self.sampling.clone().or(std::mem::take(&mut request.sampling));
        request.reasoning = self.reasoning.or(request.reasoning);
        force(&mut request.keep_alive, &self.keep_alive);
        force(&mut request.truncate, &self.truncate);
        force(&mut request.shift, &self.shift);
    }

    /// The same for an embedding request: runtime options (`num_ctx`...), `keep_alive`
    /// and `truncate`; `forced` replaces, otherwise only what is missing is set.
    fn apply_embed(&self, request: &mut EmbedRequest, forced: bool) {
        if let Ok(Value::Object(options)) = serde_json::to_value(&self.sampling) {
            for (name, value) in options {
                if forced || !request.options.contains_key(&name) {
                    request.options.insert(name, value);
                }
            }
        }
        if forced {
            force(&mut request.keep_alive, &self.keep_alive);
            force(&mut request.truncate, &self.truncate);
        } else {
            fill(&mut request.keep_alive, &self.keep_alive);
            fill(&mut request.truncate, &self.truncate);
        }
    }
}

fn fill<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
    if slot.is_none() {
        slot.clone_from(value);
    }
}

fn force<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        slot.clone_from(value);
    }
}

struct Entry {
    pattern: String,
    glob: Option<WildMatch>,
    settings: ModelSettings,
    defaults: Options,
    forced: Options,
}

/// Every `[models."PATTERN"]` of the profile, ready to match.
pub struct Policies {
    entries: Vec<Entry>,
    /// Whether any entry sets options (else requests pass untouched, uncopied).
    any_options: bool,
}

impl Policies {
    /// From the profile; an option that does not parse names its key.
    pub fn new(models: &BTreeMap<String, ModelSettings>) -> Result<Self, String> {
        let parse = |pattern: &str, which: &str, table| {
            Options::parse(table).map_err(|e| format!("models.\"{pattern}\".{which}: {e}"))
        };
        let entries: Vec<Entry> = models
            .iter()
            .map(|(pattern, settings)| {
                Ok(Entry {
                    pattern: pattern.clone(),
                    glob: pattern.contains(['*', '?']).then(|| WildMatch::new(pattern)),
                    settings: settings.clone(),
                    defaults: parse(pattern, "defaults", &settings.defaults)?,
                    forced: parse(pattern, "forced", &settings.forced)?,
                })
            })
            .collect::<Result<_, String>>()?;
        let any_options = entries.iter().any(|e| !e.defaults.is_empty() || !e.forced.is_empty());
        Ok(Self { entries, any_options })
    }

    /// The entries that match any of `names`, most specific first.
    fn matching<'a>(&'a self, names: &[&str]) -> Vec<&'a Entry> {
        // (exact 0 or glob 1, then for exact names which name, for globs the longer first)
        let mut found: Vec<((u8, usize, usize), &Entry)> = Vec::new();
        for entry in &self.entries {
            let rank = match &entry.glob {
                None => names.iter().position(|n| *n == entry.pattern).map(|i| (0, i, 0)),
                Some(glob) => names
                    .iter()
                    .position(|n| glob.matches(n))
                    .map(|i| (1, usize::MAX - entry.pattern.len(), i)),
            };
            if let Some(rank) = rank {
                found.push((rank, entry));
            }
        }
        found.sort_by_key(|(rank, _)| *rank);
        found.into_iter().map(|(_, entry)| entry).collect()
    }

    /// `request` as it goes to `upstream_model`: renamed, with the defaults and forced
    /// options of the models it matches (by the client's name or the upstream's).
    /// `None` when nothing changes.
    pub fn chat(&self, request: &ChatRequest, upstream_model: &str) -> Option<ChatRequest> {
        let entries = self.applying(&request.model, upstream_model)?;
        let mut prepared = ChatRequest {
            model: upstream_model.to_owned(),
            ..request.clone()
        };
        entries.iter().for_each(|e| e.defaults.fill(&mut prepared));
        entries.iter().rev().for_each(|e| e.forced.force(&mut prepared));
        Some(prepared)
    }

    /// The same for an embedding request.
    pub fn embed(&self, request: &EmbedRequest, upstream_model: &str) -> Option<EmbedRequest> {
        let entries = self.applying(&request.model, upstream_model)?;
        let mut prepared = EmbedRequest {
            model: upstream_model.to_owned(),
            ..request.clone()
        };
        entries
            .iter()
            .for_each(|e| e.defaults.apply_embed(&mut prepared, false));
        entries
            .iter()
            .rev()
            .for_each(|e| e.forced.apply_embed(&mut prepared, true));
        Some(prepared)
    }

    /// The `max_tokens` a chat gets on its way to `upstream_model` (a forced value, the
    /// client's, or a default), without building the request.
    pub fn max_tokens(&self, request: &ChatRequest, upstream_model: &str) -> Option<i64> {
        let entries = self.applying(&request.model, upstream_model).unwrap_or_default();
        entries
            .iter()
            .find_map(|e| e.forced.sampling.max_tokens)
            .or(request.sampling.max_tokens)
            .or_else(|| entries.iter().find_map(|e| e.defaults.sampling.max_tokens))
    }

    /// The entries with options for a request the client sent for `client` and that
    /// goes to `upstream`, most specific first; `None` when it goes as it is.
    fn applying(&self, client: &str, upstream: &str) -> Option<Vec<&Entry>> {
        let entries: Vec<&Entry> = if self.any_options {
            self.matching(&[client, upstream])
                .into_iter()
                .filter(|e| !e.defaults.is_empty() || !e.forced.is_empty())
                .collect()
        } else {
            Vec::new()
        };
        (client != upstream || !entries.is_empty()).then_some(entries)
    }

    /// The facts and display name for a model known by `names`: per field, the most
    /// specific entry that sets it.
    pub fn settings(&self, names: &[&str]) -> ModelSettings {
        let mut merged = ModelSettings::default();
        for entry in self.matching(names) {
            let s = &entry.settings;
            fill(&mut merged.display_name, &s.display_name);
            fill(&mut merged.description, &s.description);
            fill(&mut merged.capabilities, &s.capabilities);
            fill(&mut merged.context_length, &s.context_length);
            fill(&mut merged.family, &s.family);
            fill(&mut merged.parameter_size, &s.parameter_size);
            fill(&mut merged.quantization, &s.quantization);
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Reasoning, Sampling};
    use serde_json::json;

    fn table(value: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(value).unwrap()
    }

    fn settings(defaults: Value, forced: Value) -> ModelSettings {
        ModelSettings {
            defaults: table(defaults),
            forced: table(forced),
            ..Default::default()
        }
    }

    #[test]
    fn options_read_either_apis_names_and_refuse_unknown_ones() {
        let options = Options::parse(&table(json!({
            "num_ctx": 32768, "temperature": 0.7, "max_tokens": 100, "think": "high",
            "keep_alive": "10m", "stop": "END"
        })))
        .unwrap();
        assert_eq!(options.sampling.num_ctx, Some(32768));
        assert_eq!(options.sampling.max_tokens, Some(100));
        assert_eq!(options.sampling.stop, Some(vec!["END".to_owned()]));
        assert_eq!(options.reasoning, Some(Reasoning::High));
        assert_eq!(options.keep_alive, Some(json!("10m")));
        let unknown = Options::parse(&table(json!({"temprature": 0.7}))).unwrap_err();
        assert!(unknown.contains("'temprature'"), "{unknown}");
        let wrong = Options::parse(&table(json!({"num_ctx": "big"}))).unwrap_err();
        assert!(wrong.contains("invalid type"), "{wrong}");
        assert!(Options::parse(&table(json!({"think": 3}))).is_err());
    }

    #[test]
    fn defaults_fill_forced_replace_and_the_most_specific_pattern_wins() {
        let models: BTreeMap<String, ModelSettings> = [
            (
                "qwen*".to_owned(),
                settings(json!({"num_ctx": 8192, "top_k": 20}), json!({})),
            ),
            (
                "qwen3:8b".to_owned(),
                settings(json!({"num_ctx": 32768}), json!({"seed": 1})),
            ),
            ("*".to_owned(), settings(json!({}), json!({"seed": 9, "think": false}))),
        ]
        .into();
        let policies = Policies::new(&models).unwrap();
        let request = ChatRequest {
            model: "fast".into(),
            sampling: Sampling {
                top_k: Some(5),
                seed: Some(42),
                ..Default::default()
            },
            ..Default::default()
        };
        let prepared = policies.chat(&request, "qwen3:8b").unwrap();
        assert_eq!(prepared.model, "qwen3:8b");
        // The exact name's default beats the glob's; the client's own value stays.
        assert_eq!(prepared.sampling.num_ctx, Some(32768));
        assert_eq!(prepared.sampling.top_k, Some(5));
        // The exact name's forced seed beats the catch-all's; the catch-all still forces think.
        assert_eq!(prepared.sampling.seed, Some(1));
        assert_eq!(prepared.reasoning, Some(Reasoning::Off));
        // max_tokens without building the request: forced, else the client's, else a default.
        assert_eq!(policies.max_tokens(&request, "qwen3:8b"), None);
        let forced: BTreeMap<String, ModelSettings> = [(
            "fast".to_owned(),
            settings(json!({"num_predict": 64}), json!({"max_tokens": 9})),
        )]
        .into();
        assert_eq!(
            Policies::new(&forced).unwrap().max_tokens(&request, "qwen3:8b"),
            Some(9)
        );
        let defaults: BTreeMap<String, ModelSettings> =
            [("qwen*".to_owned(), settings(json!({"max_tokens": 64}), json!({})))].into();
        assert_eq!(
            Policies::new(&defaults).unwrap().max_tokens(&request, "qwen3:8b"),
            Some(64)
        );
        // Nothing to do: no copy.
        assert!(
            Policies::new(&BTreeMap::new())
                .unwrap()
                .chat(&request, "fast")
                .is_none()
        );
    }
}
