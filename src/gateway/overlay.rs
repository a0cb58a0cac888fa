//! The admin API's part of the configuration as the store keeps it: one document per
//! channel (by name), per model pattern and per setting (by dotted key), each JSON.

use std::collections::BTreeMap;

use crate::config::{ModelSettings, Overlay, UpstreamConfig};
use crate::store::Store;

const CHANNEL: &str = "channel";
const MODEL: &str = "model";
const SETTING: &str = "setting";

/// The document kinds the overlay is read from.
pub const KINDS: [&str; 3] = [CHANNEL, MODEL, SETTING];

/// Reads the overlay from `store`. A document that no longer reads (written by another
/// version) is an error naming it.
pub async fn read(store: &dyn Store) -> Result<Overlay, String> {
    let failed = |e: crate::store::StoreError| format!("reading the admin API's settings: {e}");
    let mut overlay = Overlay::default();
    for doc in store.documents(CHANNEL).await.map_err(failed)? {
        let channel: UpstreamConfig = serde_json::from_str(&doc.value)
            .map_err(|e| format!("the stored channel '{}' does not read: {e}", doc.key))?;
        overlay.channels.push(channel);
    }
    for doc in store.documents(MODEL).await.map_err(failed)? {
        let settings: ModelSettings = serde_json::from_str(&doc.value)
            .map_err(|e| format!("the stored settings of model '{}' do not read: {e}", doc.key))?;
        overlay.models.insert(doc.key, settings);
    }
    for doc in store.documents(SETTING).await.map_err(failed)? {
        let value = serde_json::from_str(&doc.value)
            .map_err(|e| format!("the stored setting '{}' does not read: {e}", doc.key))?;
        overlay.settings.insert(doc.key, value);
    }
    Ok(overlay)
}

/// Writes what differs between `before` and `after`, one document each.
pub async fn write(store: &dyn Store, before: &Overlay, after: &Overlay) -> Result<(), String> {
    let channels = |o: &Overlay| {
        o.channels
            .iter()
            .map(|c| (c.name.clone(), serde_json::to_string(c).unwrap_or_default()))
            .collect::<BTreeMap<_, _>>()
    };
    let models = |o: &Overlay| {
        o.models
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_string(v).unwrap_or_default()))
            .collect::<BTreeMap<_, _>>()
    };
    let settings = |o: &Overlay| {
        o.settings
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    for (kind, old, new) in [
        (CHANNEL, channels(before), channels(after)),
        (MODEL, models(before), models(after)),
        (SETTING, settings(before), settings(after)),
    ] {
        for key in old.keys().filter(|k| !new.contains_key(*k)) {
            store.put_document(kind, key, None).await.map_err(|e| e.to_string())?;
        }
        for (key, value) in new.iter().filter(|(k, v)| old.get(*k) != Some(v)) {
            store
                .put_document(kind, key, Some(value))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
