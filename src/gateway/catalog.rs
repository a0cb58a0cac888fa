//! The model catalog: the union of what every channel serves (its exact names, what its
//! upstream lists that its globs match, its aliases), and which channels serve a name.
//! It is authoritative: a name no channel serves is a 404 before any upstream call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Snapshot;
use super::auth::Caller;
use super::routing::Candidate;
use crate::ir::{DEFAULT_CONTEXT_LENGTH, Error, ModelCard};

/// How often a name missing from the catalog may trigger a fresh look at the upstreams.
const MISS_REFRESH: Duration = Duration::from_secs(1);

type Listings = Vec<Result<Arc<Vec<ModelCard>>, Error>>;

impl Snapshot {
    /// Every channel's model list (cached), in channel order.
    async fn listings(&self) -> Listings {
        futures::future::join_all(self.router.channels.iter().map(|c| c.listing())).await
    }

    /// The channels that serve `name` as a client spells it, each with the name it
    /// knows the model by.
    pub async fn route(&self, name: &str) -> Result<Vec<Candidate>, Error> {
        if let Some(found) = self.candidates(name, &self.listings().await) {
            return Ok(found);
        }
        // A model pulled a moment ago is not in the cached lists yet.
        if self.may_refresh() {
            self.router.channels.iter().for_each(|c| c.forget_listing());
            if let Some(found) = self.candidates(name, &self.listings().await) {
                return Ok(found);
            }
        }
        Err(Error::model_not_found(name))
    }

    fn may_refresh(&self) -> bool {
        let mut last = self.refreshed_for_miss.lock().expect("refresh lock");
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < MISS_REFRESH) {
            return false;
        }
        *last = Some(now);
        true
    }

    fn candidates(&self, name: &str, listings: &Listings) -> Option<Vec<Candidate>> {
        self.spellings(name).into_iter().find_map(|spelling| {
            let found: Vec<Candidate> = self
                .router
                .channels
                .iter()
                .enumerate()
                .filter_map(|(i, channel)| {
                    let listed = listings[i].as_ref().ok().map(|l| l.as_slice());
                    let model = channel.serves(&spelling, listed)?;
                    let verified = listed.is_some() || channel.names(&spelling);
                    Some(Candidate {
                        channel: i,
                        model,
                        verified,
                    })
                })
                .collect();
            (!found.is_empty()).then_some(found)
        })
    }

    /// The spellings a client's name may stand for, best first: as given, with
    /// `:latest` (Ollama's default tag), without the tag Ollama-facing lists add.
    fn spellings(&self, name: &str) -> Vec<String> {
        let mut spellings = vec![name.to_owned()];
        if !name.contains(':') {
            spellings.push(format!("{name}:latest"));
        }
        for suffix in [self.config.ollama.tag_suffix.as_str(), ":latest"] {
            if let Some(stripped) = name
                .strip_suffix(suffix)
                .filter(|s| !suffix.is_empty() && !s.is_empty())
            {
                spellings.push(stripped.to_owned());
            }
        }
        spellings.dedup();
        spellings
    }

    /// The models `caller` may use, completed with the profile's model settings. An
    /// error only when no channel could list anything and none names a model.
    pub async fn models(&self, caller: &Caller) -> Result<Arc<Vec<ModelCard>>, Error> {
        let all = self.all_models().await?;
        if caller.token.is_none() {
            return Ok(all);
        }
        Ok(Arc::new(
            all.iter().filter(|m| caller.may_use(&m.id)).cloned().collect(),
        ))
    }

    async fn all_models(&self) -> Result<Arc<Vec<ModelCard>>, Error> {
        let listings = self.listings().await;
        let mut cards: Vec<ModelCard> = Vec::new();
        for (channel, listing) in self.router.channels.iter().zip(&listings) {
            let listed = listing.as_ref().ok().map(|l| l.as_slice());
            for name in channel.served_names(listed) {
                if cards.iter().any(|c| c.id == name) {
                    continue;
                }
                let target = channel
                    .aliases
                    .iter()
                    .find(|(alias, _)| *alias == name)
                    .map_or(name.clone(), |(_, target)| target.clone());
                let mut card = listed
                    .and_then(|cards| cards.iter().find(|c| c.id == *target))
                    .cloned()
                    .unwrap_or_else(|| ModelCard {
                        owned_by: channel.name.clone(),
                        ..Default::default()
                    });
                card.id = name;
                cards.push(self.complete(card, &target));
            }
        }
        if cards.is_empty()
            && let Some(Err(error)) = listings.into_iter().find(Result::is_err)
        {
            return Err(error);
        }
        Ok(Arc::new(cards))
    }

    /// Fills in what the upstream could not tell, from the profile's settings for the
    /// name (or the model it stands for) and sensible defaults.
    fn complete(&self, mut card: ModelCard, target: &str) -> ModelCard {
        let settings = self.policies.settings(&[&card.id, target]);
        card.display_name = settings.display_name;
        card.description = settings.description;
        if let Some(capabilities) = settings.capabilities {
            card.capabilities = capabilities;
        } else if card.capabilities.is_empty() {
            card.capabilities = if card.id.to_lowercase().contains("embed") {
                vec!["embedding".into()]
            } else {
                vec!["completion".into(), "tools".into()]
            };
        }
        card.context_length = settings
            .context_length
            .or(card.context_length)
            .or(Some(DEFAULT_CONTEXT_LENGTH));
        card.family = settings.family.or(card.family);
        card.parameter_size = settings.parameter_size.or(card.parameter_size);
        card.quantization = settings.quantization.or(card.quantization);
        card
    }

    /// Every model with the channels that serve it and the name each knows it by, for
    /// the admin API.
    pub async fn catalog(&self) -> Result<Vec<(ModelCard, Vec<(String, String)>)>, Error> {
        let models = self.all_models().await?;
        let listings = self.listings().await;
        Ok(models
            .iter()
            .map(|card| {
                let served = self
                    .candidates(&card.id, &listings)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| (self.router.channels[c.channel].name.clone(), c.model))
                    .collect();
                (card.clone(), served)
            })
            .collect())
    }

    /// One model by the name a client used, in any of its spellings.
    pub async fn model(&self, name: &str, caller: &Caller) -> Result<ModelCard, Error> {
        caller.check_model(name)?;
        let models = self.all_models().await?;
        self.spellings(name)
            .iter()
            .find_map(|spelling| models.iter().find(|m| m.id == *spelling))
            .cloned()
            .ok_or_else(|| Error::model_not_found(name))
    }
}
