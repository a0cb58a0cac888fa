//! The real binary's store commands: `diglot migrate` on PostgreSQL and SQLite, and
//! `diglot store copy` from SQLite to PostgreSQL and back (refusing a non-empty target
//! unless `--force`), with `check-config` never showing the database's password.

mod common;

use std::process::{Command, Output};

use diglot::store::{Role, TokenRecord, UsageRecord};

const PASSWORD: &str = "cli-pw-never-shown";

/// `diglot ARGS` with `[store] url` set to `url` (when given) and no profile.
fn diglot(url: Option<&str>, args: &[&str]) -> Output {
    let dir = common::temp_dir();
    let mut command = Command::new(env!("CARGO_BIN_EXE_diglot"));
    command
        .args(args)
        .env_remove("DIGLOT_PROFILE")
        .env("DIGLOT_STORE__DATA_DIR", dir.path())
        .current_dir(dir.path());
    if let Some(url) = url {
        command.env("DIGLOT_STORE__URL", url);
    }
    command.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn database() -> String {
    let url = common::fresh_database(&common::postgres()).await;
    url.replacen("postgres://diglot@", &format!("postgres://diglot:{PASSWORD}@"), 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_says_the_version_of_either_engine() {
    let url = database().await;
    let out = diglot(Some(&url), &["migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("schema version 4, up to date"), "{}", text(&out));
    assert!(!text(&out).contains(PASSWORD), "{}", text(&out));
    // Again: nothing left to do.
    assert!(diglot(Some(&url), &["migrate"]).status.success());

    let dir = common::temp_dir();
    let file = dir.path().join("elsewhere.db");
    let out = diglot(Some(&format!("sqlite:{}", file.display())), &["migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("schema version 4"), "{}", text(&out));
    assert!(file.exists(), "the file store.url names");

    let shown = diglot(Some(&url), &["check-config"]);
    assert!(shown.status.success(), "{}", text(&shown));
    assert!(
        text(&shown).contains("postgres://diglot:<redacted>@") && !text(&shown).contains(PASSWORD),
        "{}",
        text(&shown)
    );
    let bad = diglot(Some("mysql://root@db/diglot"), &["check-config"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad).contains("neither sqlite:PATH nor postgres://"),
        "{}",
        text(&bad)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn store_copy_moves_everything_from_sqlite_to_postgres_and_back() {
    let dir = common::temp_dir();
    let sqlite = format!("sqlite:{}", dir.path().join("source.db").display());
    {
        let source = diglot::store::open_sqlite(&dir.path().join("source.db")).unwrap();
        for name in ["first", "second", "third"] {
            let token = TokenRecord::for_secret(name, &format!("dg-{name}"), Role::User);
            source.create_token(&token).await.unwrap();
        }
        let first = source.tokens().await.unwrap()[0].clone();
        source.delete_token(first.id.unwrap()).await.unwrap();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let records: Vec<UsageRecord> = (0..2_500)
            .map(|i| UsageRecord {
                at_ms: now_ms - i * 1_000,
                token_digest: Some("d".into()),
                frontend: "ollama",
                model: "llama3".into(),
                status: 200,
                prompt_tokens: 3,
                estimated: i % 2 == 0,
                ..Default::default()
            })
            .collect();
        source.write_usage(&records).await.unwrap();
        source.put_document("channel", "local", Some("{}")).await.unwrap();
        source.add_audit(&Default::default()).await.unwrap();
    }
    let url = database().await;
    let out = diglot(None, &["store", "copy", "--from", &sqlite, "--to", &url]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    for line in ["tokens", "usage ", "usage_hour", "documents", "audit"] {
        assert!(said.contains(line), "{said}");
    }
    assert!(said.contains("2500") && !said.contains(PASSWORD), "{said}");

    let open = |url: String| async move {
        let config = diglot::config::StoreConfig {
            url,
            ..Default::default()
        };
        diglot::store::open(&config).await.unwrap()
    };
    let (source, target) = (open(sqlite.clone()).await, open(url.clone()).await);
    assert_eq!(
        target.tokens().await.unwrap(),
        source.tokens().await.unwrap(),
        "ids kept"
    );
    assert_eq!(
        target.recent_usage(3_000).await.unwrap(),
        source.recent_usage(3_000).await.unwrap()
    );
    assert_eq!(
        target.daily_usage(0).await.unwrap(),
        source.daily_usage(0).await.unwrap()
    );
    let hours = |store: std::sync::Arc<dyn diglot::store::Store>| async move {
        store
            .usage_series(0, i64::MAX, diglot::store::Step::Hour)
            .await
            .unwrap()
    };
    assert_eq!(hours(target.clone()).await, hours(source.clone()).await);
    assert_eq!(
        target.documents("channel").await.unwrap(),
        source.documents("channel").await.unwrap()
    );
    assert_eq!(
        target.audit(None, 10).await.unwrap(),
        source.audit(None, 10).await.unwrap()
    );
    // New rows get new ids after the copied ones.
    let fourth = target
        .create_token(&TokenRecord::for_secret("fourth", "dg-fourth", Role::User))
        .await
        .unwrap();
    assert_eq!(fourth.id, Some(4));

    // A target that holds something is refused, unless --force.
    let again = diglot(None, &["store", "copy", "--from", &sqlite, "--to", &url]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("not empty"), "{}", text(&again));
    let forced = diglot(None, &["store", "copy", "--from", &sqlite, "--to", &url, "--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    assert_eq!(target.tokens().await.unwrap().len(), 2, "what it held was replaced");

    // And back into a new SQLite file.
    let back = format!("sqlite:{}", dir.path().join("back.db").display());
    let out = diglot(None, &["store", "copy", "--from", &url, "--to", &back]);
    assert!(out.status.success(), "{}", text(&out));
    let back = open(back).await;
    assert_eq!(
        back.recent_usage(3_000).await.unwrap(),
        source.recent_usage(3_000).await.unwrap()
    );
    assert_eq!(back.tokens().await.unwrap(), source.tokens().await.unwrap());
}
