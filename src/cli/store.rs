//! The `migrate` and `store copy` commands: bring a store's schema up to date, and move
//! everything from one store into another (SQLite to PostgreSQL when a single gateway
//! becomes several replicas, or back).

use clap::Subcommand;

use crate::config::{StoreConfig, StoreLocation};
use crate::store::{self, Store};

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy every token (with its id), usage record (with the dashboard's totals), document,
    /// audit entry and kept response from one store into another, which must be empty.
    Copy {
        /// The store to read: sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE.
        #[arg(long)]
        from: String,
        /// The store to fill, in the same form.
        #[arg(long)]
        to: String,
        /// Delete what the target holds first, rather than refusing a non-empty one.
        #[arg(long)]
        force: bool,
    },
}

/// After opening (which migrated it): which schema version `store` is at.
pub async fn migrated(store: &dyn Store, config: &StoreConfig) -> Result<String, String> {
    let version = store.schema_version().await.map_err(|e| e.to_string())?;
    Ok(format!(
        "store {}: schema version {version}, up to date\n",
        config.describe()
    ))
}

/// A store named by a URL (`--from`, `--to`), opened and migrated.
async fn open(url: &str, flag: &str) -> Result<std::sync::Arc<dyn Store>, String> {
    let config = StoreConfig {
        url: url.to_owned(),
        pool_size: 4,
        data_dir: Default::default(),
    };
    match config.location() {
        Ok(StoreLocation::None) => Err(format!("{flag} names no store")),
        Err(e) => Err(format!("{flag}: {e}")),
        Ok(_) => store::open(&config)
            .await
            .map_err(|e| format!("{flag} {}: {e}", config.describe())),
    }
}

/// Runs a `store` command.
pub async fn run(command: StoreCommand) -> Result<String, String> {
    let StoreCommand::Copy { from, to, force } = command;
    let source = open(&from, "--from").await?;
    let target = open(&to, "--to").await?;
    let counts = store::copy::copy(source.as_ref(), target.as_ref(), force)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::from("copied:\n");
    for (table, count) in counts {
        out.push_str(&format!("  {table:<16} {count}\n"));
    }
    Ok(out)
}
