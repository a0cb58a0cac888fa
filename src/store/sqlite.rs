//! The embedded store: one SQLite file, created and migrated on open (versioned
//! migrations in `migrations/`, applied in order and recorded in `user_version`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, ToSql, params};
use rusqlite_migration::{M, Migrations};

use super::{DailyUsage, Role, Store, StoreError, StoreResult, StoredResponse, TokenRecord, UsageRecord};

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("migrations/0001_tokens_and_usage.sql")),
        M::up(include_str!("migrations/0002_responses.sql")),
    ])
}

/// WAL, so the CLI and the server may use the file at the same time; then the schema.
fn prepare(connection: &mut Connection) -> StoreResult<()> {
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(failed("set WAL mode"))?;
    migrations()
        .to_latest(connection)
        .map_err(|e| StoreError(format!("store: migrate: {e}")))
}

/// The store's calls run on Tokio's blocking threads, one at a time on the connection.
pub struct SqliteStore(Arc<Database>);

struct Database {
    connection: Mutex<Connection>,
}

fn failed(doing: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError(format!("store: {doing}: {e}"))
}

impl SqliteStore {
    /// Opens (creating and migrating) the file at `path`. Blocks: call it at start.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let mut connection = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open the database {}: {e}", path.display())))?;
        // First, so every step below waits for another process rather than failing.
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(failed("set the busy timeout"))?;
        // Several processes may open a new file at once (a gateway and the CLI, replicas).
        // Switching to WAL can still fail at once with "database is locked" (SQLite does not
        // wait there, to avoid a deadlock), and of two processes that read the old schema
        // version, the second fails on the first one's tables. Both find the work done when
        // they try again.
        let mut attempt = 0;
        while let Err(e) = prepare(&mut connection) {
            attempt += 1;
            if attempt == 10 {
                return Err(StoreError(format!(
                    "cannot prepare the database {}: {e}",
                    path.display()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(20 * attempt));
        }
        Ok(Self(Arc::new(Database {
            connection: Mutex::new(connection),
        })))
    }

    /// Runs `call` on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let database = self.0.clone();
        tokio::task::spawn_blocking(move || call(&database))
            .await
            .map_err(|e| StoreError(format!("store: the call failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create_token(&self, token: &TokenRecord) -> StoreResult<TokenRecord> {
        let token = token.clone();
        self.blocking(move |db| db.create_token(&token)).await
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.blocking(Database::tokens).await
    }

    async fn update_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let token = token.clone();
        self.blocking(move |db| db.update_token(&token)).await
    }

    async fn delete_token(&self, id: i64) -> StoreResult<()> {
        self.blocking(move |db| db.delete_token(id)).await
    }

    async fn write_usage(&self, records: &[UsageRecord]) -> StoreResult<()> {
        let records = records.to_vec();
        self.blocking(move |db| db.write_usage(&records)).await
    }

    async fn tokens_used_since(&self, since_ms: i64) -> StoreResult<Vec<(String, u64)>> {
        self.blocking(move |db| db.tokens_used_since(since_ms)).await
    }

    async fn daily_usage(&self, since_ms: i64) -> StoreResult<Vec<DailyUsage>> {
        self.blocking(move |db| db.daily_usage(since_ms)).await
    }

    async fn usage_count(&self) -> StoreResult<u64> {
        self.blocking(Database::usage_count).await
    }

    async fn recent_usage(&self, limit: u32) -> StoreResult<Vec<UsageRecord>> {
        self.blocking(move |db| db.recent_usage(limit)).await
    }

    async fn save_response(&self, response: &StoredResponse) -> StoreResult<()> {
        let response = response.clone();
        self.blocking(move |db| db.save_response(&response)).await
    }

    async fn response(&self, id: &str, owner: &str, now: i64) -> StoreResult<Option<StoredResponse>> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.blocking(move |db| db.response(&id, &owner, now)).await
    }

    async fn delete_response(&self, id: &str, owner: &str) -> StoreResult<bool> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.blocking(move |db| db.delete_response(&id, &owner)).await
    }

    async fn response_item(&self, id: &str, owner: &str, now: i64) -> StoreResult<Option<String>> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.blocking(move |db| db.response_item(&id, &owner, now)).await
    }
}

impl Database {
    fn with<T>(&self, run: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
        let mut connection = self
            .connection
            .lock()
            .map_err(|_| StoreError("store: a previous call panicked".into()))?;
        run(&mut connection)
    }
}

fn json_list(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

fn token_from_row(row: &rusqlite::Row) -> rusqlite::Result<TokenRecord> {
    let list = |i: usize| -> rusqlite::Result<Vec<String>> {
        let text: String = row.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or_default())
    };
    let role: String = row.get(4)?;
    let as_u64 = |v: Option<i64>| v.map(|n| n.max(0) as u64);
    Ok(TokenRecord {
        id: Some(row.get(0)?),
        name: row.get(1)?,
        digest: row.get(2)?,
        prefix: row.get(3)?,
        role: if role == "admin" { Role::Admin } else { Role::User },
        enabled: row.get(5)?,
        created_at: row.get(6)?,
        expires_at: row.get(7)?,
        models: list(8)?,
        ips: list(9)?,
        monthly_quota: as_u64(row.get(10)?),
        rpm: as_u64(row.get(11)?),
        tpm: as_u64(row.get(12)?),
        max_concurrent: row.get::<_, Option<i64>>(13)?.map(|n| n.max(0) as u32),
    })
}

type Fields = Vec<(&'static str, Box<dyn ToSql>)>;

/// A token's changeable fields as named parameters, shared by insert and update (the
/// insert adds the digest, prefix and creation time, which never change).
fn token_fields(token: &TokenRecord) -> Fields {
    vec![
        (":name", Box::new(token.name.clone())),
        (":role", Box::new(token.role.as_str())),
        (":enabled", Box::new(token.enabled)),
        (":expires_at", Box::new(token.expires_at)),
        (":models", Box::new(json_list(&token.models))),
        (":ips", Box::new(json_list(&token.ips))),
        (":monthly_quota", Box::new(token.monthly_quota.map(|n| n as i64))),
        (":rpm", Box::new(token.rpm.map(|n| n as i64))),
        (":tpm", Box::new(token.tpm.map(|n| n as i64))),
        (":max_concurrent", Box::new(token.max_concurrent)),
    ]
}

fn named<'a>(fields: &'a [(&'static str, Box<dyn ToSql>)]) -> Vec<(&'static str, &'a dyn ToSql)> {
    fields.iter().map(|(name, value)| (*name, value.as_ref())).collect()
}

const TOKEN_COLUMNS: &str = "id, name, digest, prefix, role, enabled, created_at, expires_at, models, ips, \
                             monthly_quota, rpm, tpm, max_concurrent";

/// The calls themselves, blocking.
impl Database {
    fn create_token(&self, token: &TokenRecord) -> StoreResult<TokenRecord> {
        let mut fields = token_fields(token);
        fields.push((":digest", Box::new(token.digest.clone())));
        fields.push((":prefix", Box::new(token.prefix.clone())));
        fields.push((":created_at", Box::new(token.created_at)));
        self.with(|c| {
            c.execute(
                "INSERT INTO tokens (name, digest, prefix, role, enabled, created_at, expires_at, models, ips, \
                 monthly_quota, rpm, tpm, max_concurrent) VALUES (:name, :digest, :prefix, :role, :enabled, \
                 :created_at, :expires_at, :models, :ips, :monthly_quota, :rpm, :tpm, :max_concurrent)",
                named(&fields).as_slice(),
            )
            .map_err(failed("create a token"))?;
            Ok(TokenRecord {
                id: Some(c.last_insert_rowid()),
                ..token.clone()
            })
        })
    }

    fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.with(|c| {
            let mut statement = c
                .prepare(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id"))
                .map_err(failed("list tokens"))?;
            let rows = statement.query_map([], token_from_row).map_err(failed("list tokens"))?;
            rows.collect::<Result<_, _>>().map_err(failed("read a token"))
        })
    }

    fn update_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let id = token
            .id
            .ok_or_else(|| StoreError("store: only stored tokens can be updated".into()))?;
        self.with(|c| {
            let mut fields = token_fields(token);
            fields.push((":id", Box::new(id)));
            let changed = c
                .execute(
                    "UPDATE tokens SET name = :name, role = :role, enabled = :enabled, expires_at = :expires_at, \
                     models = :models, ips = :ips, monthly_quota = :monthly_quota, rpm = :rpm, tpm = :tpm, \
                     max_concurrent = :max_concurrent WHERE id = :id",
                    named(&fields).as_slice(),
                )
                .map_err(failed("update a token"))?;
            if changed == 0 {
                return Err(StoreError(format!("no token with id {id}")));
            }
            Ok(())
        })
    }

    fn delete_token(&self, id: i64) -> StoreResult<()> {
        self.with(|c| {
            let changed = c
                .execute("DELETE FROM tokens WHERE id = ?1", [id])
                .map_err(failed("delete a token"))?;
            if changed == 0 {
                return Err(StoreError(format!("no token with id {id}")));
            }
            Ok(())
        })
    }

    fn write_usage(&self, records: &[UsageRecord]) -> StoreResult<()> {
        self.with(|c| {
            let transaction = c.transaction().map_err(failed("begin writing usage"))?;
            {
                let mut insert = transaction
                    .prepare_cached(
                        "INSERT INTO usage (at_ms, token_digest, token_prefix, client_ip, frontend, model, channel, \
                         upstream_model, status, latency_ms, ttft_ms, prompt_tokens, completion_tokens, estimated, \
                         cache_hit) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                    )
                    .map_err(failed("prepare a usage insert"))?;
                for r in records {
                    insert
                        .execute(params![
                            r.at_ms,
                            r.token_digest,
                            r.token_prefix,
                            r.client_ip,
                            r.frontend,
                            r.model,
                            r.channel,
                            r.upstream_model,
                            r.status,
                            r.latency_ms as i64,
                            r.ttft_ms.map(|n| n as i64),
                            r.prompt_tokens as i64,
                            r.completion_tokens as i64,
                            r.estimated,
                            r.cache_hit,
                        ])
                        .map_err(failed("write usage"))?;
                }
            }
            transaction.commit().map_err(failed("commit usage"))
        })
    }

    fn tokens_used_since(&self, since_ms: i64) -> StoreResult<Vec<(String, u64)>> {
        self.with(|c| {
            let mut statement = c
                .prepare(
                    "SELECT token_digest, SUM(prompt_tokens + completion_tokens) FROM usage \
                     WHERE token_digest IS NOT NULL AND at_ms >= ?1 AND cache_hit = 0 GROUP BY token_digest",
                )
                .map_err(failed("sum usage"))?;
            let rows = statement
                .query_map([since_ms], |row| Ok((row.get(0)?, row.get::<_, i64>(1)?.max(0) as u64)))
                .map_err(failed("sum usage"))?;
            rows.collect::<Result<_, _>>().map_err(failed("read usage"))
        })
    }

    fn daily_usage(&self, since_ms: i64) -> StoreResult<Vec<DailyUsage>> {
        self.with(|c| {
            let mut statement = c
                .prepare(
                    "SELECT date(at_ms / 1000, 'unixepoch') AS day, token_prefix, COUNT(*), \
                     SUM(prompt_tokens * (cache_hit = 0)), SUM(completion_tokens * (cache_hit = 0)), \
                     SUM(status >= 400), SUM(cache_hit) FROM usage WHERE at_ms >= ?1 \
                     GROUP BY day, token_digest ORDER BY day, token_prefix",
                )
                .map_err(failed("aggregate usage"))?;
            let rows = statement
                .query_map([since_ms], |row| {
                    let n = |i: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, i64>(i)?.max(0) as u64) };
                    Ok(DailyUsage {
                        day: row.get(0)?,
                        token_prefix: row.get(1)?,
                        requests: n(2)?,
                        prompt_tokens: n(3)?,
                        completion_tokens: n(4)?,
                        errors: n(5)?,
                        cache_hits: n(6)?,
                    })
                })
                .map_err(failed("aggregate usage"))?;
            rows.collect::<Result<_, _>>().map_err(failed("read usage"))
        })
    }

    fn recent_usage(&self, limit: u32) -> StoreResult<Vec<UsageRecord>> {
        self.with(|c| {
            let mut statement = c
                .prepare(
                    "SELECT at_ms, token_digest, token_prefix, client_ip, frontend, model, channel, upstream_model, \
                     status, latency_ms, ttft_ms, prompt_tokens, completion_tokens, estimated, cache_hit \
                     FROM usage ORDER BY id DESC LIMIT ?1",
                )
                .map_err(failed("read usage"))?;
            let rows = statement
                .query_map([limit], usage_from_row)
                .map_err(failed("read usage"))?;
            rows.collect::<Result<_, _>>().map_err(failed("read usage"))
        })
    }

    fn usage_count(&self) -> StoreResult<u64> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM usage", [], |row| row.get::<_, i64>(0))
                .optional()
                .map_err(failed("count usage"))
                .map(|n| n.unwrap_or(0).max(0) as u64)
        })
    }
}

/// Stored responses.
impl Database {
    fn save_response(&self, r: &StoredResponse) -> StoreResult<()> {
        self.with(|c| {
            let transaction = c.transaction().map_err(failed("begin saving a response"))?;
            for table in ["responses", "response_items"] {
                transaction
                    .execute(&format!("DELETE FROM {table} WHERE expires_at <= ?1"), [r.created_at])
                    .map_err(failed("drop expired responses"))?;
            }
            transaction
                .execute(
                    "INSERT OR REPLACE INTO responses (id, owner, created_at, expires_at, response, input, history) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        r.id,
                        r.owner,
                        r.created_at,
                        r.expires_at,
                        r.response,
                        r.input,
                        r.history
                    ],
                )
                .map_err(failed("save a response"))?;
            for (id, item) in &r.items {
                transaction
                    .execute(
                        "INSERT OR REPLACE INTO response_items (owner, id, response_id, expires_at, item) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![r.owner, id, r.id, r.expires_at, item],
                    )
                    .map_err(failed("save a response item"))?;
            }
            transaction.commit().map_err(failed("commit a response"))
        })
    }

    fn response(&self, id: &str, owner: &str, now: i64) -> StoreResult<Option<StoredResponse>> {
        self.with(|c| {
            c.query_row(
                "SELECT id, owner, created_at, expires_at, response, input, history FROM responses \
                 WHERE id = ?1 AND owner = ?2 AND expires_at > ?3",
                params![id, owner, now],
                |row| {
                    Ok(StoredResponse {
                        id: row.get(0)?,
                        owner: row.get(1)?,
                        created_at: row.get(2)?,
                        expires_at: row.get(3)?,
                        response: row.get(4)?,
                        input: row.get(5)?,
                        history: row.get(6)?,
                        items: Vec::new(),
                    })
                },
            )
            .optional()
            .map_err(failed("read a response"))
        })
    }

    fn delete_response(&self, id: &str, owner: &str) -> StoreResult<bool> {
        self.with(|c| {
            let transaction = c.transaction().map_err(failed("begin deleting a response"))?;
            let deleted = transaction
                .execute("DELETE FROM responses WHERE id = ?1 AND owner = ?2", params![id, owner])
                .map_err(failed("delete a response"))?;
            transaction
                .execute(
                    "DELETE FROM response_items WHERE response_id = ?1 AND owner = ?2",
                    params![id, owner],
                )
                .map_err(failed("delete a response's items"))?;
            transaction.commit().map_err(failed("commit a deletion"))?;
            Ok(deleted > 0)
        })
    }

    fn response_item(&self, id: &str, owner: &str, now: i64) -> StoreResult<Option<String>> {
        self.with(|c| {
            c.query_row(
                "SELECT item FROM response_items WHERE id = ?1 AND owner = ?2 AND expires_at > ?3",
                params![id, owner, now],
                |row| row.get(0),
            )
            .optional()
            .map_err(failed("read a response item"))
        })
    }
}

fn usage_from_row(row: &rusqlite::Row) -> rusqlite::Result<UsageRecord> {
    let frontend: String = row.get(4)?;
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, i64>(i)?.max(0) as u64) };
    Ok(UsageRecord {
        at_ms: row.get(0)?,
        token_digest: row.get(1)?,
        token_prefix: row.get(2)?,
        client_ip: row.get(3)?,
        frontend: if frontend == "ollama" { "ollama" } else { "openai" },
        model: row.get(5)?,
        channel: row.get(6)?,
        upstream_model: row.get(7)?,
        status: row.get(8)?,
        latency_ms: n(9)?,
        ttft_ms: row.get::<_, Option<i64>>(10)?.map(|v| v.max(0) as u64),
        prompt_tokens: n(11)?,
        completion_tokens: n(12)?,
        estimated: row.get(13)?,
        cache_hit: row.get(14)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert!(migrations().validate().is_ok());
    }

    #[tokio::test]
    async fn responses_are_kept_per_owner_until_they_expire() {
        let dir = tempfile::Builder::new().prefix("diglot-responses-").tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("diglot.db")).unwrap();
        let response = |id: &str, created_at: i64, expires_at: i64| StoredResponse {
            id: id.into(),
            owner: "alice".into(),
            created_at,
            expires_at,
            response: "{}".into(),
            input: "[]".into(),
            history: "[]".into(),
            items: vec![(format!("msg_{id}"), "{}".into())],
        };
        store.save_response(&response("resp_a", 100, 200)).await.unwrap();
        let kept = store.response("resp_a", "alice", 150).await.unwrap().unwrap();
        assert_eq!(
            kept,
            StoredResponse {
                items: Vec::new(),
                ..response("resp_a", 100, 200)
            }
        );
        assert_eq!(
            store
                .response_item("msg_resp_a", "alice", 150)
                .await
                .unwrap()
                .as_deref(),
            Some("{}")
        );
        assert_eq!(store.response_item("msg_resp_a", "bob", 150).await.unwrap(), None);
        assert_eq!(
            store.response("resp_a", "bob", 150).await.unwrap(),
            None,
            "another owner's"
        );
        assert_eq!(store.response("resp_a", "alice", 200).await.unwrap(), None, "expired");
        assert!(!store.delete_response("resp_a", "bob").await.unwrap());
        // A later save drops what expired by then.
        store.save_response(&response("resp_b", 300, 400)).await.unwrap();
        assert!(!store.delete_response("resp_a", "alice").await.unwrap());
        assert_eq!(
            store.response_item("msg_resp_a", "alice", 350).await.unwrap(),
            None,
            "expired with it"
        );
        assert!(store.delete_response("resp_b", "alice").await.unwrap());
        assert_eq!(
            store.response_item("msg_resp_b", "alice", 301).await.unwrap(),
            None,
            "deleted with it"
        );
        assert_eq!(store.response("resp_b", "alice", 301).await.unwrap(), None);
    }

    /// Where a child process of `processes_opening_a_new_file_at_once_all_succeed` opens
    /// the store, and the file whose appearance starts them all at once.
    const CHILD_DB: &str = "DIGLOT_TEST_CHILD_DB";
    const CHILD_GO: &str = "DIGLOT_TEST_CHILD_GO";

    /// POSIX locks are per process, so the race is between processes: this test binary is
    /// run again, six times, each running only `child_opens_the_store`.
    #[test]
    fn processes_opening_a_new_file_at_once_all_succeed() {
        let dir = tempfile::Builder::new().prefix("diglot-race-").tempdir().unwrap();
        let path = dir.path().join("diglot.db");
        let go = dir.path().join("go");
        let children: Vec<_> = (0..6)
            .map(|_| {
                std::process::Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "store::sqlite::tests::child_opens_the_store",
                        "--ignored",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CHILD_DB, &path)
                    .env(CHILD_GO, &go)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // Every child is waiting for this file; they all open the new store together.
        std::fs::write(&go, "").unwrap();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "a process failed to open the new store:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(SqliteStore::open(&path).is_ok());
    }

    /// One child of `processes_opening_a_new_file_at_once_all_succeed` (run by it only).
    #[test]
    #[ignore = "run by processes_opening_a_new_file_at_once_all_succeed in its own process"]
    fn child_opens_the_store() {
        let path = std::path::PathBuf::from(std::env::var_os(CHILD_DB).expect("run by the parent test"));
        let go = std::path::PathBuf::from(std::env::var_os(CHILD_GO).expect("run by the parent test"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !go.exists() {
            assert!(std::time::Instant::now() < deadline, "the parent never said go");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if let Err(e) = SqliteStore::open(&path) {
            panic!("{e}");
        }
    }
}
