//! The store's behaviour, each case run on both engines (SQLite in a temporary file, and a
//! new database on the test binary's own PostgreSQL): the usage log's reads and rollups
//! checked against a plain scan of the records written (pages and their filters, series,
//! top lists, when tokens were last used, the pruning of per-minute totals), tokens,
//! documents, the audit log and kept responses; and, for SQLite, the backfill of a log
//! written before the rollups existed.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use diglot::store::rollup::{DAY_MS, HOUR_MS, MINUTE_MS, MINUTES_KEPT_MS, floor};
use diglot::store::{Dimension, Step, Store, UsageFilter, UsagePoint, UsageRecord, UsageTop};

/// A new, empty store and what keeps it (its directory).
pub struct Fresh {
    pub store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

pub fn sqlite() -> Fresh {
    let dir = tempfile::Builder::new().prefix("diglot-store-").tempdir().unwrap();
    Fresh {
        store: diglot::store::open_data_dir(dir.path()).unwrap(),
        _dir: Some(dir),
    }
}

pub async fn postgres() -> Fresh {
    let config = diglot::config::StoreConfig {
        url: common::fresh_database(&common::postgres()).await,
        pool_size: 4,
        ..Default::default()
    };
    Fresh {
        store: diglot::store::open(&config).await.unwrap(),
        _dir: None,
    }
}

/// Each case, `async fn case(store: Arc<dyn Store>)`, as a test on each engine.
macro_rules! on_both_engines {
    ($($case:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    let fresh = crate::sqlite();
                    super::$case(fresh.store.clone()).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    let fresh = crate::postgres().await;
                    super::$case(fresh.store.clone()).await;
                }
            )*
        }
    };
}

#[path = "store/kept.rs"]
mod kept;

on_both_engines!(
    rollups_equal_a_scan_of_the_records,
    per_minute_totals_are_pruned_as_they_age,
    pages_of_the_log_are_filtered_and_walk_every_row_once,
);

/// A small deterministic generator (xorshift), so a failure repeats.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.roll(from.len() as u64) as usize]
    }
}

/// `count` varied records, oldest first, from 40 hours before `now_ms` to it (and, with
/// `old`, a few from 50 to 70 hours before, past the per-minute window): several
/// tokens (and none), models, channels (and none: never routed, or from the cache),
/// frontends, successes, errors, hang-ups (499), cache hits, records without a ttft.
fn records(count: usize, now_ms: i64, old: bool, dice: &mut Dice) -> Vec<UsageRecord> {
    let tokens = [
        None,
        Some(("d-alice", "dg-Al")),
        Some(("d-bob", "dg-Bo")),
        Some(("d-carol", "dg-Ca")),
    ];
    let mut records: Vec<UsageRecord> = (0..count)
        .map(|i| {
            let age = if old && i % 10 == 0 {
                50 * HOUR_MS + dice.roll(20 * HOUR_MS as u64) as i64
            } else {
                dice.roll(40 * HOUR_MS as u64) as i64
            };
            let token = dice.pick(&tokens);
            let cache_hit = dice.roll(8) == 0;
            let status = if cache_hit {
                200
            } else {
                dice.pick(&[200, 200, 200, 200, 429, 499, 502, 404])
            };
            let channel = (!cache_hit && status != 429).then(|| dice.pick(&["local", "cloud"]).to_owned());
            UsageRecord {
                at_ms: now_ms - age,
                token_digest: token.map(|t| t.0.to_owned()),
                token_prefix: token.map(|t| t.1.to_owned()),
                client_ip: Some(format!("10.0.0.{}", dice.roll(4))),
                frontend: dice.pick(&diglot::store::FRONTENDS),
                model: dice.pick(&["llama3", "qwen3", "gpt-oss"]).to_owned(),
                upstream_model: channel.as_ref().map(|_| "upstream".to_owned()),
                attempts: if channel.is_some() { 1 + dice.roll(3) as u32 } else { 0 },
                channel,
                status,
                latency_ms: dice.pick(&[0, 1, 3, 40, 150, 900, 4_000, 30_000, 400_000]) + dice.roll(5),
                ttft_ms: (dice.roll(3) != 0).then(|| dice.roll(2_000)),
                prompt_tokens: dice.roll(5_000),
                completion_tokens: dice.roll(800),
                estimated: dice.roll(5) == 0,
                cache_hit,
                request_id: Some(format!("req-{i}")),
                trace_id: (i % 2 == 0).then(|| format!("{i:032x}")),
                ..Default::default()
            }
        })
        .collect();
    records.sort_by_key(|r| r.at_ms);
    records
}

/// Writes `records` in batches of varied sizes, as the usage log's writer would.
async fn write(store: &dyn Store, records: &[UsageRecord]) {
    let mut rest = records;
    for size in [1, 37, 100, 5].into_iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, more) = rest.split_at(size.min(rest.len()));
        store.write_usage(batch).await.unwrap();
        rest = more;
    }
}

/// The totals of `records` per step (`step_of` a record, None to leave it out), counted
/// one by one.
fn scan(records: &[UsageRecord], step_of: impl Fn(&UsageRecord) -> Option<i64>) -> Vec<UsagePoint> {
    let mut points: BTreeMap<i64, UsagePoint> = BTreeMap::new();
    for r in records {
        let Some(at_ms) = step_of(r) else { continue };
        let p = points.entry(at_ms).or_insert_with(|| UsagePoint {
            at_ms,
            ..Default::default()
        });
        p.requests += 1;
        if r.status >= 400 {
            p.errors += 1;
        }
        if r.cache_hit {
            p.cache_hits += 1;
        } else {
            p.prompt_tokens += r.prompt_tokens;
            p.completion_tokens += r.completion_tokens;
        }
        p.latency.record(r.latency_ms);
        if let Some(ttft) = r.ttft_ms {
            p.ttft.record(ttft);
        }
    }
    points.into_values().collect()
}

/// The steps that start from `since_ms`'s on and before `until_ms`, each whole.
fn scan_between(records: &[UsageRecord], since_ms: i64, until_ms: i64, step: Step) -> Vec<UsagePoint> {
    let since_ms = step.floor(since_ms);
    scan(records, |r| {
        Some(step.floor(r.at_ms)).filter(|at| (since_ms..until_ms).contains(at))
    })
}

fn scan_top(records: &[UsageRecord], since_ms: i64, dimension: Dimension) -> Vec<UsageTop> {
    let mut tops: BTreeMap<String, UsageTop> = BTreeMap::new();
    for r in records.iter().filter(|r| r.at_ms >= Step::Hour.floor(since_ms)) {
        let (group, key) = match dimension {
            Dimension::Token => (
                r.token_digest.clone().unwrap_or_default(),
                r.token_prefix.clone().unwrap_or_default(),
            ),
            Dimension::Model => (r.model.clone(), r.model.clone()),
            Dimension::Channel => (
                r.channel.clone().unwrap_or_default(),
                r.channel.clone().unwrap_or_default(),
            ),
        };
        let top = tops.entry(group).or_insert_with(|| UsageTop {
            key,
            token_digest: r.token_digest.clone().filter(|_| dimension == Dimension::Token),
            requests: 0,
            errors: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
        });
        top.requests += 1;
        top.errors += u64::from(r.status >= 400);
        if !r.cache_hit {
            top.prompt_tokens += r.prompt_tokens;
            top.completion_tokens += r.completion_tokens;
        }
    }
    // Busiest first; the map's order (by what is grouped) breaks ties, as the query does.
    let mut tops: Vec<UsageTop> = tops.into_values().collect();
    tops.sort_by_key(|t| std::cmp::Reverse(t.requests));
    tops
}

fn scan_last_used(records: &[UsageRecord]) -> Vec<(String, i64)> {
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for r in records {
        if let Some(digest) = &r.token_digest {
            let at = last.entry(digest.clone()).or_insert(r.at_ms);
            *at = (*at).max(r.at_ms);
        }
    }
    last.into_iter().collect()
}

/// Every rollup read equals a scan of `records` (written at about `now_ms`).
async fn assert_rollups_match(store: &dyn Store, records: &[UsageRecord], now_ms: i64) {
    let hourly = store
        .usage_series(now_ms - 80 * HOUR_MS, now_ms + 1, Step::Hour)
        .await
        .unwrap();
    assert_eq!(
        hourly,
        scan_between(records, now_ms - 80 * HOUR_MS, now_ms + 1, Step::Hour)
    );
    assert!(hourly.len() > 30, "records over many hours");
    // Per-minute totals are kept for the last 48 hours.
    let since = now_ms - 47 * HOUR_MS;
    let minutes = store.usage_series(since, now_ms + 1, Step::Minute).await.unwrap();
    assert_eq!(minutes, scan_between(records, since, now_ms + 1, Step::Minute));
    assert!(minutes.len() > 100, "records over many minutes");
    // A window inside, its start in the middle of a step.
    for step in [Step::Minute, Step::Hour] {
        let (since, until) = (now_ms - 20 * HOUR_MS + 1_234, now_ms - 5 * HOUR_MS);
        let window = store.usage_series(since, until, step).await.unwrap();
        assert_eq!(window, scan_between(records, since, until, step), "{step:?}");
    }
    // The whole window in one: the same totals either way.
    let sum = |points: &[UsagePoint]| {
        points.iter().fold(UsagePoint::default(), |mut all, p| {
            all.requests += p.requests;
            all.latency.merge(&p.latency);
            all
        })
    };
    assert_eq!(sum(&hourly).requests, records.len() as u64);
    assert_eq!(sum(&hourly).latency.total(), records.len() as u64);

    // A day's start inside the records' span, for windows of whole days.
    let day_start = floor(now_ms - 30 * HOUR_MS, DAY_MS);
    for dimension in [Dimension::Token, Dimension::Model, Dimension::Channel] {
        // Whole days and hours of a partial one; hours only; from a day's start.
        for since in [now_ms - 100 * HOUR_MS, now_ms - 10 * HOUR_MS + 1, day_start] {
            let top = store.usage_top(since, dimension, 100).await.unwrap();
            assert_eq!(top, scan_top(records, since, dimension), "{dimension:?}");
            let first_two = store.usage_top(since, dimension, 2).await.unwrap();
            assert_eq!(first_two, top[..2], "{dimension:?}");
        }
    }
    assert_eq!(store.last_used().await.unwrap(), scan_last_used(records));

    // Quotas: tokens each API token used (not from the cache) since an hour's start, whole
    // days and a partial one, or hours only.
    let hour_start = floor(now_ms - 10 * HOUR_MS, HOUR_MS);
    for since in [0, day_start - 5 * HOUR_MS, day_start, hour_start] {
        let mut scanned: BTreeMap<String, u64> = BTreeMap::new();
        for r in records.iter().filter(|r| r.at_ms >= since && !r.cache_hit) {
            if let Some(digest) = &r.token_digest {
                *scanned.entry(digest.clone()).or_default() += r.prompt_tokens + r.completion_tokens;
            }
        }
        let used: BTreeMap<String, u64> = store.tokens_used_since(since).await.unwrap().into_iter().collect();
        assert_eq!(used, scanned, "since {since}");
        assert!(used.len() > 1, "several tokens used since {since}");
    }
}

async fn rollups_equal_a_scan_of_the_records(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut dice = Dice(0x5eed);
    // Two rounds of writes, the second adding to rows the first made.
    let mut all = records(300, now_ms, true, &mut dice);
    write(store, &all).await;
    let more = records(200, now_ms, false, &mut dice);
    write(store, &more).await;
    all.extend(more);
    assert_eq!(store.usage_count().await.unwrap(), 500);
    assert_rollups_match(store, &all, now_ms).await;

    // Records older than 48 hours are in the hourly totals only.
    let old: Vec<&UsageRecord> = all.iter().filter(|r| r.at_ms < now_ms - 48 * HOUR_MS).collect();
    assert!(old.len() > 10);
    let hourly = store
        .usage_series(now_ms - 80 * HOUR_MS, now_ms - 48 * HOUR_MS, Step::Hour)
        .await;
    assert!(hourly.unwrap().iter().map(|p| p.requests).sum::<u64>() >= old.len() as u64);
    let minutes = store
        .usage_series(0, now_ms - 49 * HOUR_MS, Step::Minute)
        .await
        .unwrap();
    assert_eq!(minutes, []);
}

async fn per_minute_totals_are_pruned_as_they_age(store: Arc<dyn Store>) {
    let then_ms = 28_333_333 * MINUTE_MS;
    let record = |at_ms: i64| UsageRecord {
        at_ms,
        model: "llama3".into(),
        status: 200,
        ..Default::default()
    };
    store.write_usage_at(&[record(then_ms)], then_ms).await.unwrap();
    assert_eq!(store.usage_series(0, i64::MAX, Step::Minute).await.unwrap().len(), 1);
    // A minute later, the row is not yet old.
    store
        .write_usage_at(&[record(then_ms + MINUTE_MS)], then_ms + MINUTE_MS)
        .await
        .unwrap();
    assert_eq!(store.usage_series(0, i64::MAX, Step::Minute).await.unwrap().len(), 2);
    // 48 hours after the second, the first is gone (the second is just 48 hours old).
    let later_ms = then_ms + MINUTE_MS + MINUTES_KEPT_MS;
    store.write_usage_at(&[record(later_ms)], later_ms).await.unwrap();
    let minutes = store.usage_series(0, i64::MAX, Step::Minute).await.unwrap();
    let kept: Vec<i64> = minutes.iter().map(|p| p.at_ms).collect();
    assert_eq!(kept, [then_ms + MINUTE_MS, later_ms]);
    let hours = store.usage_series(0, i64::MAX, Step::Hour).await.unwrap();
    assert_eq!(
        hours.iter().map(|p| p.requests).sum::<u64>(),
        3,
        "hourly totals are kept"
    );
}

/// Whether `record` is one `filter` asks for (its limit aside).
fn matches(filter: &UsageFilter, r: &UsageRecord) -> bool {
    let same = |wanted: &Option<String>, value: Option<&str>| wanted.as_deref().is_none_or(|w| Some(w) == value);
    same(&filter.token_digest, r.token_digest.as_deref())
        && same(&filter.model, Some(&r.model))
        && same(&filter.channel, r.channel.as_deref())
        && same(&filter.frontend, Some(r.frontend))
        && filter.status_class.is_none_or(|class| r.status / 100 == class)
        && filter.since_ms.is_none_or(|since| r.at_ms >= since)
        && filter.until_ms.is_none_or(|until| r.at_ms < until)
        && filter.before_id.is_none_or(|before| r.id < before)
}

async fn pages_of_the_log_are_filtered_and_walk_every_row_once(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let now_ms = chrono::Utc::now().timestamp_millis();
    write(store, &records(300, now_ms, true, &mut Dice(42))).await;
    let all = store
        .usage_page(&UsageFilter {
            limit: 1_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 300);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(store.recent_usage(1_000).await.unwrap(), all);
    let r = &all[150];
    assert!(r.request_id.is_some() && r.attempts <= 3 && diglot::store::FRONTENDS.contains(&r.frontend));

    let filters = [
        UsageFilter {
            token_digest: Some("d-bob".into()),
            ..Default::default()
        },
        UsageFilter {
            model: Some("qwen3".into()),
            ..Default::default()
        },
        UsageFilter {
            channel: Some("cloud".into()),
            ..Default::default()
        },
        UsageFilter {
            frontend: Some("anthropic".into()),
            ..Default::default()
        },
        UsageFilter {
            status_class: Some(2),
            ..Default::default()
        },
        UsageFilter {
            status_class: Some(4),
            ..Default::default()
        },
        UsageFilter {
            status_class: Some(5),
            ..Default::default()
        },
        UsageFilter {
            since_ms: Some(now_ms - 10 * HOUR_MS),
            ..Default::default()
        },
        UsageFilter {
            until_ms: Some(now_ms - 10 * HOUR_MS),
            ..Default::default()
        },
        UsageFilter {
            before_id: Some(all[100].id),
            ..Default::default()
        },
        UsageFilter {
            model: Some("llama3".into()),
            status_class: Some(4),
            since_ms: Some(now_ms - 30 * HOUR_MS),
            until_ms: Some(now_ms - 2 * HOUR_MS),
            ..Default::default()
        },
    ];
    for filter in filters {
        let expected: Vec<&UsageRecord> = all.iter().filter(|r| matches(&filter, r)).collect();
        assert!(!expected.is_empty() && expected.len() < all.len(), "{filter:?} narrows");
        let page = store
            .usage_page(&UsageFilter {
                limit: 1_000,
                ..filter.clone()
            })
            .await
            .unwrap();
        assert_eq!(page.iter().collect::<Vec<_>>(), expected, "{filter:?}");

        // Page by page, each row exactly once.
        let mut walked = Vec::new();
        let mut before_id = filter.before_id;
        loop {
            let page = store
                .usage_page(&UsageFilter {
                    before_id,
                    limit: 7,
                    ..filter.clone()
                })
                .await
                .unwrap();
            assert!(page.len() <= 7);
            let Some(last) = page.last() else { break };
            before_id = Some(last.id);
            walked.extend(page);
        }
        assert_eq!(walked.iter().collect::<Vec<_>>(), expected, "{filter:?} paged");
    }
    // 499 (a client that hung up) is in class 4.
    let class_4 = UsageFilter {
        status_class: Some(4),
        limit: 1_000,
        ..Default::default()
    };
    assert!(
        store
            .usage_page(&class_4)
            .await
            .unwrap()
            .iter()
            .any(|r| r.status == 499)
    );
    let none = UsageFilter {
        limit: 0,
        ..Default::default()
    };
    assert_eq!(store.usage_page(&none).await.unwrap(), []);
}

#[tokio::test]
async fn a_log_from_before_the_rollups_is_backfilled() {
    let dir = tempfile::Builder::new().prefix("diglot-backfill-").tempdir().unwrap();
    let path = dir.path().join("diglot.db");
    let now_ms = chrono::Utc::now().timestamp_millis();
    let records = records(400, now_ms, true, &mut Dice(0xbacf111));
    {
        // The schema before the rollups: the first two migrations, as rusqlite_migration
        // records them.
        let connection = rusqlite::Connection::open(&path).unwrap();
        for sql in [
            include_str!("../src/store/migrations/sqlite/0001_tokens_and_usage.sql"),
            include_str!("../src/store/migrations/sqlite/0002_responses.sql"),
            "PRAGMA user_version = 2;",
        ] {
            connection.execute_batch(sql).unwrap();
        }
        let mut insert = connection
            .prepare(
                "INSERT INTO usage (at_ms, token_digest, token_prefix, client_ip, frontend, model, channel, \
                 upstream_model, status, latency_ms, ttft_ms, prompt_tokens, completion_tokens, estimated, \
                 cache_hit) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )
            .unwrap();
        for r in &records {
            insert
                .execute(rusqlite::params![
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
                .unwrap();
        }
    }
    let store = diglot::store::open_sqlite(&path).unwrap();
    let store = store.as_ref();
    assert_rollups_match(store, &records, now_ms).await;
    // The new columns: no ids for old rows; routed ones made at least one attempt.
    let page = store.recent_usage(1_000).await.unwrap();
    assert_eq!(page.len(), records.len());
    for r in &page {
        assert_eq!((r.request_id.as_deref(), r.trace_id.as_deref()), (None, None));
        assert_eq!(r.attempts, u32::from(r.channel.is_some()));
    }
    // New writes add to the backfilled totals.
    let more = self::records(50, now_ms, false, &mut Dice(7));
    write(store, &more).await;
    let all: Vec<UsageRecord> = records.into_iter().chain(more).collect();
    assert_rollups_match(store, &all, now_ms).await;
}

#[test]
fn every_frontend_reads_back_as_itself() {
    use diglot::protocol::Frontend;
    // Exhaustive: a new frontend fails to compile here until it is in `FRONTENDS`.
    let all = |f: Frontend| match f {
        Frontend::OpenAi | Frontend::Ollama | Frontend::Anthropic => f,
    };
    for frontend in [Frontend::OpenAi, Frontend::Ollama, Frontend::Anthropic].map(all) {
        assert_eq!(diglot::store::frontend_name(frontend.as_str()), frontend.as_str());
    }
    assert_eq!(diglot::store::frontend_name("gopher"), "unknown");
}
