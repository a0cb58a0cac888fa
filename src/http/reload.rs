//! What triggers a reload of the configuration: `SIGHUP`, and the profile file changing
//! (watched, debounced: editors write in steps). The gateway builds and checks the new
//! snapshot; a refused one is logged with the file and the reason, and the running one
//! stays.

use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tracing::{error, info, warn};

use super::App;

/// Reads the configuration again and applies it; see `App::reload`.
pub async fn reload(app: &Arc<App>, why: &'static str) -> Result<(), String> {
    let Some(source) = &app.source else {
        return Err("diglot was given its configuration whole, so there is no profile to read again".into());
    };
    let file = source
        .file()
        .map_or_else(|| "(built-in defaults)".to_owned(), |f| f.display().to_string());
    let applied = match source.load() {
        Ok(config) => app.gateway.apply(config).await,
        Err(e) => Err(e.to_string()),
    };
    match applied {
        Ok(kept) => {
            if !kept.is_empty() {
                warn!(%file, settings = ?kept, "these settings change only with a restart; they keep their running values");
            }
            info!(%file, why, "configuration reloaded");
            Ok(())
        }
        Err(e) => {
            error!(%file, why, error = %e, "configuration reload refused; the running configuration stays");
            Err(e)
        }
    }
}

/// Reloads on every `SIGHUP` for as long as `app` lives.
pub fn on_hangup(app: &Arc<App>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => return warn!(error = %e, "cannot listen for SIGHUP; reload by editing the profile instead"),
        };
        let app = Arc::downgrade(app);
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let Some(app) = app.upgrade() else { return };
                let _ = app.reload("SIGHUP").await;
            }
        });
    }
}

/// Watches the profile file (with `[reload] watch`, when there is one) and reloads when
/// it changes; watching stops when the returned watcher is dropped.
pub fn watch(app: &Arc<App>) -> Option<RecommendedWatcher> {
    let file = app.source.as_ref()?.file()?;
    let settings = app.gateway.snapshot().config.reload.clone();
    if !settings.watch {
        return None;
    }
    let name = file.file_name()?.to_owned();
    // The directory, not the file: editors save by writing a new file over the old one.
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => ".".into(),
    };
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        if let Ok(event) = event
            && is_change(&event.kind)
            && event.paths.iter().any(|p| p.file_name() == Some(name.as_os_str()))
        {
            let _ = changed.send(());
        }
    })
    .inspect_err(|e| warn!(error = %e, "cannot watch the profile; reload with SIGHUP instead"))
    .ok()?;
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        warn!(dir = %dir.display(), error = %e, "cannot watch the profile; reload with SIGHUP instead");
        return None;
    }
    let app = Arc::downgrade(app);
    let watched = file.clone();
    let debounce = Duration::from_millis(settings.debounce_ms.max(1));
    tokio::spawn(async move {
        // Saving the same bytes again (or `touch`) is not an edit.
        let mut last = tokio::fs::read(&watched).await.ok();
        while changes.recv().await.is_some() {
            // Editors write in steps: read the file once they have been quiet a while.
            tokio::time::sleep(debounce).await;
            while changes.try_recv().is_ok() {}
            let now = tokio::fs::read(&watched).await.ok();
            if now.is_some() && now == last {
                continue;
            }
            last = now;
            let Some(app) = app.upgrade() else { return };
            let _ = app.reload("the profile changed").await;
        }
    });
    info!(file = %file.display(), "watching the profile for changes");
    Some(watcher)
}

/// Whether a watched event can be an edit. Opening and reading the file are reported
/// too (by the reload's own read, another diglot on the same profile, `cat`): reacting to
/// those made every reload's read trigger the next, a read of the profile every debounce
/// period for as long as diglot ran, and two diglots on one profile wake each other.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}
