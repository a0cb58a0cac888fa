//! What only the shared store does, on the test binary's own PostgreSQL: replicas starting
//! together migrate once, a newer schema is refused, replicas writing usage at once add up
//! exactly, changes reach the other replicas (and `Resync` after a lost connection), an
//! unreachable database is a clear error, and its password shows nowhere.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use diglot::config::StoreConfig;
use diglot::store::{Dimension, Role, Step, Store, StoreChange, TokenRecord, UsageRecord};
use tokio::sync::broadcast;

/// Everything this binary logs, to look for the password in.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || Writer(writer.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buffer
    })
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const PASSWORD: &str = "pw-never-shown-7781";

/// A new database's URL, with a password (trust authentication takes any).
async fn database() -> String {
    let url = common::fresh_database(&common::postgres()).await;
    url.replacen("postgres://diglot@", &format!("postgres://diglot:{PASSWORD}@"), 1)
}

async fn open(url: &str) -> Result<Arc<dyn Store>, String> {
    logs();
    let config = StoreConfig {
        url: url.to_owned(),
        pool_size: 4,
        ..Default::default()
    };
    diglot::store::open(&config).await.map_err(|e| e.to_string())
}

/// A plain connection to the database at `url`, for what the store does not do.
async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_opening_a_new_database_at_once_migrate_it_once() {
    let url = database().await;
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { open(&url).await })
        })
        .collect();
    for open in opens {
        let store = open.await.unwrap().unwrap();
        assert_eq!(store.schema_version().await.unwrap(), 4);
    }
    let client = connect(&url).await;
    let versions: Vec<i32> = client
        .query("SELECT version FROM diglot_migrations ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4], "each migration applied once");

    // A database a newer diglot migrated is refused, saying so.
    client
        .execute("INSERT INTO diglot_migrations (version) VALUES (5)", &[])
        .await
        .unwrap();
    let error = open(&url).await.err().expect("a newer schema is refused");
    assert!(
        error.contains("version 5, newer than this diglot knows (version 4)"),
        "{error}"
    );
    assert!(!error.contains(PASSWORD), "{error}");
}

fn record(i: u64, at_ms: i64) -> UsageRecord {
    UsageRecord {
        at_ms: at_ms + (i % 7) as i64 * 60_000,
        token_digest: Some(["d-a", "d-b"][(i % 2) as usize].into()),
        token_prefix: Some("dg-x".into()),
        frontend: "openai",
        model: ["m1", "m2", "m3"][(i % 3) as usize].into(),
        channel: Some("local".into()),
        status: 200,
        latency_ms: i % 500,
        prompt_tokens: 10,
        completion_tokens: i % 5,
        attempts: 1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_writing_usage_at_once_add_up_exactly() {
    let url = database().await;
    let (a, b) = (open(&url).await.unwrap(), open(&url).await.unwrap());
    let now_ms = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let writer = |store: Arc<dyn Store>, from: u64| {
        tokio::spawn(async move {
            for batch in 0..20 {
                let records: Vec<_> = (0..50).map(|i| record(from + batch * 50 + i, now_ms)).collect();
                store.write_usage(&records).await.unwrap();
            }
        })
    };
    let (one, two) = (writer(a.clone(), 0), writer(b.clone(), 1_000));
    one.await.unwrap();
    two.await.unwrap();
    let all: Vec<UsageRecord> = (0..2_000).map(|i| record(i, now_ms)).collect();
    assert_eq!(a.usage_count().await.unwrap(), 2_000);
    let sum = |points: Vec<diglot::store::UsagePoint>| {
        points.iter().fold((0, 0, 0), |(r, p, c), point| {
            (r + point.requests, p + point.prompt_tokens, c + point.completion_tokens)
        })
    };
    let expected = (2_000, 20_000, all.iter().map(|r| r.completion_tokens).sum::<u64>());
    for step in [Step::Minute, Step::Hour] {
        let series = b
            .usage_series(now_ms - 7_200_000, now_ms + 7_200_000, step)
            .await
            .unwrap();
        assert_eq!(sum(series), expected, "{step:?}");
    }
    let models = a.usage_top(now_ms - 7_200_000, Dimension::Model, 10).await.unwrap();
    let per_model: Vec<(String, u64)> = models.into_iter().map(|t| (t.key, t.requests)).collect();
    assert_eq!(
        per_model,
        [("m1".to_owned(), 667), ("m2".into(), 667), ("m3".into(), 666)]
    );
    let latest = all.iter().map(|r| r.at_ms).max().unwrap();
    assert_eq!(
        b.last_used().await.unwrap(),
        [("d-a".to_owned(), latest), ("d-b".to_owned(), latest)]
    );
}

/// The next change `changes` hears, within 2 seconds.
async fn next(changes: &mut broadcast::Receiver<StoreChange>) -> StoreChange {
    tokio::time::timeout(Duration::from_secs(2), changes.recv())
        .await
        .expect("a change within 2 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_reach_the_other_replicas_within_two_seconds() {
    let url = database().await;
    let (a, b) = (open(&url).await.unwrap(), open(&url).await.unwrap());
    let mut heard = b.changes().expect("a shared store tells of changes");
    let token = a
        .create_token(&TokenRecord::for_secret("alice", "dg-alice", Role::User))
        .await
        .unwrap();
    assert_eq!(next(&mut heard).await, StoreChange::Tokens);
    a.update_token(&TokenRecord {
        enabled: false,
        ..token.clone()
    })
    .await
    .unwrap();
    assert_eq!(next(&mut heard).await, StoreChange::Tokens);
    a.delete_token(token.id.unwrap()).await.unwrap();
    assert_eq!(next(&mut heard).await, StoreChange::Tokens);
    a.put_document("channel", "local", Some("{}")).await.unwrap();
    assert_eq!(
        next(&mut heard).await,
        StoreChange::Documents { kind: "channel".into() }
    );
    a.put_document("setting", "settings", None).await.unwrap();
    assert_eq!(
        next(&mut heard).await,
        StoreChange::Documents { kind: "setting".into() }
    );
    // Usage is no change to tell.
    a.write_usage(&[record(1, 0)]).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), heard.recv())
            .await
            .is_err(),
        "nothing else was said"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_listening_connection_comes_back_and_says_resync() {
    let url = database().await;
    let (a, b) = (open(&url).await.unwrap(), open(&url).await.unwrap());
    let mut heard = b.changes().unwrap();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let killed = connect(&url)
        .await
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = $1",
            &[&database],
        )
        .await
        .unwrap();
    assert_eq!(killed, 2, "both replicas' listening connections");
    let resync = tokio::time::timeout(Duration::from_secs(10), heard.recv()).await;
    assert_eq!(resync.expect("Resync within 10 s").unwrap(), StoreChange::Resync);
    // And it hears again.
    a.put_document("model", "m", Some("{}")).await.unwrap();
    assert_eq!(next(&mut heard).await, StoreChange::Documents { kind: "model".into() });
    let logged = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(logged.contains("lost the connection listening"), "{logged}");
    assert!(!logged.contains(PASSWORD), "{logged}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_is_a_clear_error_without_its_password() {
    let port = common::free_port();
    let url = format!("postgres://diglot:{PASSWORD}@127.0.0.1:{port}/gateway?password={PASSWORD}");
    let started = std::time::Instant::now();
    let error = open(&url).await.err().expect("nothing listens there");
    assert!(started.elapsed() >= Duration::from_secs(5), "retried for a while first");
    assert!(
        error.contains(&format!(
            "cannot reach PostgreSQL at postgres://diglot@127.0.0.1:{port}/gateway"
        )),
        "{error}"
    );
    assert!(!error.contains(PASSWORD), "{error}");

    // Nor does a failing statement's error, nor anything logged.
    let store = open(&database().await).await.unwrap();
    let token = TokenRecord::for_secret("alice", "dg-alice", Role::User);
    store.create_token(&token).await.unwrap();
    let duplicate = store.create_token(&token).await.unwrap_err().to_string();
    assert!(
        duplicate.contains("duplicate key") && !duplicate.contains(PASSWORD),
        "{duplicate}"
    );
    let logged = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(logged.contains("not ready yet"), "{logged}");
    assert!(!logged.contains(PASSWORD), "{logged}");
    // Nor the configuration as shown.
    let config = StoreConfig {
        url: url.clone(),
        ..Default::default()
    };
    for shown in [
        format!("{config:?}"),
        config.describe(),
        format!("{:?}", config.redacted()),
    ] {
        assert!(!shown.contains(PASSWORD), "{shown}");
    }
}

/// A server that takes the connection but never answers (a hung database, a black-holed
/// port behind a proxy) must not hold a start forever: each connect gives up after five
/// seconds unless the URL says otherwise, and the start after its retry window.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_never_answers_is_given_up_on() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let url = format!("postgres://diglot@127.0.0.1:{port}/gateway");
    let started = std::time::Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(30), open(&url))
        .await
        .expect("the start gave up by itself")
        .err()
        .expect("nothing answers there");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert!(error.contains("cannot reach PostgreSQL"), "{error}");
    held.abort();
}

/// `sslmode` and `sslrootcert` as libpq reads them, against a server that refuses
/// clear-text connections: TLS is used when asked for, and the server's certificate is
/// verified (an authority the system does not know is refused unless named).
#[tokio::test(flavor = "multi_thread")]
async fn tls_is_used_as_the_url_asks_and_the_certificate_is_verified() {
    let (base, certificates) = common::postgres_tls();
    let authority = certificates.authority.display().to_string();

    let clear = open(&base).await.err().expect("the server takes TLS only");
    assert!(clear.contains("cannot reach PostgreSQL"), "{clear}");

    for mode in ["require", "verify-full", "prefer"] {
        let url = format!("{base}?sslmode={mode}&sslrootcert={authority}");
        let store = open(&url).await.unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
        let token = TokenRecord::for_secret(&format!("tls-{mode}"), &format!("dg-tls-{mode}"), Role::User);
        store.create_token(&token).await.unwrap();
        let named = store.tokens().await.unwrap();
        assert!(named.iter().any(|t| t.name == token.name), "sslmode={mode}");
    }
    // By name too, as the certificate says.
    let by_name = base.replacen("127.0.0.1", "localhost", 1);
    open(&format!("{by_name}?sslmode=require&sslrootcert={authority}"))
        .await
        .unwrap();

    let unknown = open(&format!("{base}?sslmode=require"))
        .await
        .err()
        .expect("an unknown authority");
    assert!(unknown.contains("certificate"), "{unknown}");
    let missing = open(&format!("{base}?sslmode=require&sslrootcert=/nonexistent/ca.pem"))
        .await
        .err()
        .expect("a missing file");
    assert!(missing.contains("sslrootcert /nonexistent/ca.pem"), "{missing}");
    let bad = open(&format!("{base}?sslmode=sometimes"))
        .await
        .err()
        .expect("a wrong mode");
    assert!(bad.contains("sslmode=sometimes is none of"), "{bad}");
}
