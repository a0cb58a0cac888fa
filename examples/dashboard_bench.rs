//! How fast the admin dashboard's reads are on a large usage log: writes 1,000,000 usage
//! records through `Store::write_usage` in batches of 512 (as the gateway's usage writer
//! does), spread over 30 days, then times the queries a dashboard makes. Exits 1 when a
//! whole 30-day dashboard (series and the three top lists) takes 100 ms or more, the
//! budget the rollups exist for.
//!
//! ```sh
//! cargo run --release --example dashboard_bench               # 1,000,000 records
//! cargo run --release --example dashboard_bench -- 100000     # fewer, for a quick look
//! ```
//!
//! The spread is a shared gateway's: ~50 tokens, each using one frontend and one to three
//! of ~10 models; each model served by one of 4 channels (some by two, as failover); 3%
//! upstream errors, 1% clients hanging up (499), 1% rate limited (429, never routed), 6%
//! answered from the cache; streamed answers (60%) have a time to first token.

use std::time::{Duration, Instant};

use diglot::store::{Dimension, Step, UsageFilter, UsageRecord};

const RECORDS: usize = 1_000_000;
const BATCH: usize = 512;
const DAY_MS: i64 = 24 * 3_600_000;
const RUNS: usize = 9;
const BUDGET: Duration = Duration::from_millis(100);

/// A small deterministic generator (xorshift), so every run writes the same log.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.roll(100) < percent
    }
}

struct Token {
    digest: String,
    prefix: String,
    frontend: &'static str,
    models: Vec<usize>,
}

const MODELS: [&str; 10] = [
    "llama3.3:70b",
    "qwen3:32b",
    "qwen3-coder:30b",
    "gpt-oss:120b",
    "gpt-oss:20b",
    "mistral-small3.2",
    "gemma3:27b",
    "deepseek-r1:70b",
    "nomic-embed-text",
    "claude-sonnet-4",
];
const CHANNELS: [&str; 4] = ["gpu-a", "gpu-b", "cloud", "anthropic"];

fn tokens(dice: &mut Dice) -> Vec<Token> {
    (0..50)
        .map(|i| Token {
            digest: format!("{:016x}{:016x}{:016x}{:016x}", i, dice.roll(u64::MAX), i * 7, i * 13),
            prefix: format!("dg-{i:02}ab"),
            frontend: ["openai", "openai", "ollama", "anthropic"][i % 4],
            models: (0..1 + dice.roll(3))
                .map(|_| dice.roll(MODELS.len() as u64) as usize)
                .collect(),
        })
        .collect()
}

fn record(at_ms: i64, tokens: &[Token], dice: &mut Dice) -> UsageRecord {
    // A few tokens do most of the work, as on a shared gateway.
    let token = &tokens[(dice.roll(50) * dice.roll(50) / 50) as usize];
    let model = token.models[dice.roll(token.models.len() as u64) as usize];
    let cache_hit = dice.chance(6);
    let status = match dice.roll(100) {
        _ if cache_hit => 200,
        0..=2 => 502,
        3 => 499,
        4 => 429,
        _ => 200,
    };
    let routed = !cache_hit && status != 429;
    // Failover: a model's second channel answers now and then.
    let channel = CHANNELS[(model + usize::from(dice.chance(10))) % CHANNELS.len()];
    let latency_ms = if cache_hit {
        dice.roll(5)
    } else {
        // Mostly short, a long tail: up to 30 s.
        let spread = dice.roll(30_000) + 1;
        80 + dice.roll(spread)
    };
    UsageRecord {
        at_ms,
        token_digest: Some(token.digest.clone()),
        token_prefix: Some(token.prefix.clone()),
        client_ip: Some(format!("10.1.{}.{}", dice.roll(4), dice.roll(250))),
        frontend: token.frontend,
        model: MODELS[model].to_owned(),
        channel: routed.then(|| channel.to_owned()),
        upstream_model: routed.then(|| MODELS[model].to_owned()),
        status,
        latency_ms,
        ttft_ms: (routed && dice.chance(60)).then(|| latency_ms.min(50 + dice.roll(2_000))),
        prompt_tokens: 200 + dice.roll(8_000),
        completion_tokens: dice.roll(1_500),
        estimated: dice.chance(2),
        cache_hit,
        request_id: Some(format!("{:032x}", dice.roll(u64::MAX))),
        trace_id: Some(format!("{:032x}", dice.roll(u64::MAX))),
        attempts: u32::from(routed) + u32::from(routed && dice.chance(3)),
        ..Default::default()
    }
}

/// The median of `RUNS` timings of `query`, and what its last run returned.
async fn time<T, F: Future<Output = T>>(mut query: impl FnMut() -> F) -> (Duration, T) {
    let mut took = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        last = Some(query().await);
        took.push(start.elapsed());
    }
    took.sort();
    (took[RUNS / 2], last.expect("at least one run"))
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    let count: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().expect("the number of records to write"),
        None => RECORDS,
    };
    let dir = tempfile::Builder::new()
        .prefix("diglot-dashboard-")
        .tempdir()
        .expect("a temp dir");
    let store = diglot::store::open_data_dir(dir.path()).expect("a new store");

    let mut dice = Dice(0x00d1_9107);
    let tokens = tokens(&mut dice);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let from_ms = now_ms - 30 * DAY_MS;
    let spacing = (30 * DAY_MS) as f64 / count as f64;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..count {
        batch.push(record(from_ms + (i as f64 * spacing) as i64, &tokens, &mut dice));
        if batch.len() == BATCH || i + 1 == count {
            store.write_usage(&batch).await.expect("usage written");
            batch.clear();
        }
    }
    let wrote = started.elapsed();
    let size = std::fs::metadata(diglot::store::file(dir.path())).map_or(0, |m| m.len());
    println!(
        "wrote {count} records in {:.1} s: {:.0} records/s; store {:.0} MB\n",
        wrote.as_secs_f64(),
        count as f64 / wrote.as_secs_f64(),
        size as f64 / 1e6
    );

    let store = &store;
    let mut rows: Vec<(String, Duration, usize)> = Vec::new();
    for (name, since, step) in [
        ("usage_series 1 h, per minute", 3_600_000, Step::Minute),
        ("usage_series 24 h, per hour", DAY_MS, Step::Hour),
        ("usage_series 7 d, per hour", 7 * DAY_MS, Step::Hour),
        ("usage_series 30 d, per hour", 30 * DAY_MS, Step::Hour),
    ] {
        let (took, points) = time(|| store.usage_series(now_ms - since, now_ms + 1, step)).await;
        rows.push((name.into(), took, points.expect("a series").len()));
    }
    for (name, dimension) in [
        ("usage_top 30 d, tokens", Dimension::Token),
        ("usage_top 30 d, models", Dimension::Model),
        ("usage_top 30 d, channels", Dimension::Channel),
    ] {
        let (took, top) = time(|| store.usage_top(from_ms, dimension, 10)).await;
        rows.push((name.into(), took, top.expect("a top list").len()));
    }
    let (took, used) = time(|| store.last_used()).await;
    rows.push(("last_used".into(), took, used.expect("last used").len()));
    let filter = UsageFilter {
        model: Some(MODELS[1].to_owned()),
        limit: 50,
        ..Default::default()
    };
    let (took, page) = time(|| store.usage_page(&filter)).await;
    rows.push((
        "usage_page, one model, 50 rows".into(),
        took,
        page.expect("a page").len(),
    ));
    let filter = UsageFilter {
        model: Some(MODELS[1].to_owned()),
        since_ms: Some(now_ms - 14 * DAY_MS),
        until_ms: Some(now_ms - 13 * DAY_MS),
        limit: 50,
        ..Default::default()
    };
    let (took, page) = time(|| store.usage_page(&filter)).await;
    rows.push((
        "usage_page, one model, a day 2 weeks ago".into(),
        took,
        page.expect("a page").len(),
    ));

    let (dashboard, _) = time(|| async {
        let series = store
            .usage_series(from_ms, now_ms + 1, Step::Hour)
            .await
            .expect("a series");
        for dimension in [Dimension::Token, Dimension::Model, Dimension::Channel] {
            store.usage_top(from_ms, dimension, 10).await.expect("a top list");
        }
        series
    })
    .await;
    rows.push(("**dashboard 30 d** (series + 3 tops)".into(), dashboard, 0));

    println!("| query | median of {RUNS} (ms) | rows |\n|---|---:|---:|");
    for (name, took, found) in &rows {
        println!("| {name} | {} | {found} |", ms(*took));
    }
    if dashboard >= BUDGET {
        eprintln!(
            "\nthe 30-day dashboard took {} ms: over the {} ms budget",
            ms(dashboard),
            BUDGET.as_millis()
        );
        std::process::exit(1);
    }
    println!("\nthe 30-day dashboard answers within {} ms", BUDGET.as_millis());
}
