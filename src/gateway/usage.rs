//! Usage records: one per request, written to the store in batches by a background task
//! so the request path never waits on the database, and flushed on shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, warn};

use super::auth::Caller;
use super::limits::Ticket;
use crate::ir::{ChatEvent, Error, estimate_tokens};
use crate::store::{Store, UsageRecord};

/// At most this many records per write, and at most this long between writes.
const BATCH: usize = 512;
const LINGER: Duration = Duration::from_millis(200);

pub struct UsageLog {
    sender: Mutex<Option<mpsc::UnboundedSender<UsageRecord>>>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl UsageLog {
    /// Starts the writer. Without a store, records are dropped.
    pub fn start(store: Option<Arc<dyn Store>>) -> Self {
        let Some(store) = store else {
            return Self {
                sender: Mutex::new(None),
                writer: Mutex::new(None),
            };
        };
        let (sender, mut receiver) = mpsc::unbounded_channel::<UsageRecord>();
        let writer = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                // Wait for one record, then gather what else arrives shortly after.
                match receiver.recv().await {
                    Some(record) => batch.push(record),
                    None => break,
                }
                let deadline = tokio::time::Instant::now() + LINGER;
                while batch.len() < BATCH {
                    match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(record)) => batch.push(record),
                        Ok(None) | Err(_) => break,
                    }
                }
                write(&store, std::mem::take(&mut batch)).await;
            }
            // Closed: what is left was received above; nothing is pending.
        });
        Self {
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
        }
    }

    pub fn record(&self, record: UsageRecord) {
        if let Some(sender) = &*self.sender.lock().expect("usage lock")
            && sender.send(record).is_err()
        {
            warn!("a usage record arrived after shutdown and was not written");
        }
    }

    /// Stops taking records and waits until every one taken is written.
    pub async fn flush(&self) {
        drop(self.sender.lock().expect("usage lock").take());
        let writer = self.writer.lock().expect("usage lock").take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

async fn write(store: &Arc<dyn Store>, batch: Vec<UsageRecord>) {
    let store = store.clone();
    let count = batch.len();
    // A failed write is retried a few times: records must not be lost to a busy file.
    let result = tokio::task::spawn_blocking(move || {
        let mut last = None;
        for attempt in 0..5 {
            match store.write_usage(&batch) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(100 << attempt));
                }
            }
        }
        Err(last.expect("an error was kept"))
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(error = %e, records = count, "usage records could not be written"),
        Err(e) => error!(error = %e, records = count, "the usage writer failed"),
    }
}

/// Watches one request from arrival to its last event and writes its usage record:
/// status, latency, time to first event, the upstream's token counts (or an estimate,
/// flagged), and settles the request's limit reservations with them.
pub struct Meter {
    log: Arc<UsageLog>,
    record: UsageRecord,
    started: std::time::Instant,
    ticket: Option<Ticket>,
    /// Characters of output seen, for an estimate when the upstream reports no usage.
    output_chars: usize,
    prompt_estimate: u64,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    done: bool,
}

impl Meter {
    pub fn start(log: Arc<UsageLog>, caller: &Caller, model: &str) -> Self {
        let token = caller.token.as_ref();
        Self {
            log,
            record: UsageRecord {
                at_ms: chrono::Utc::now().timestamp_millis(),
                token_digest: token.map(|t| t.digest.clone()),
                token_prefix: token.map(|t| t.prefix.clone()),
                client_ip: Some(caller.ip.to_string()),
                frontend: caller.frontend,
                model: model.to_owned(),
                ..Default::default()
            },
            started: std::time::Instant::now(),
            ticket: None,
            output_chars: 0,
            prompt_estimate: 0,
            prompt_tokens: None,
            completion_tokens: None,
            done: false,
        }
    }

    pub fn admitted(&mut self, ticket: Ticket, prompt_estimate: u64) {
        self.ticket = Some(ticket);
        self.prompt_estimate = prompt_estimate;
    }

    /// The channel and model name the answer comes from.
    pub fn routed(&mut self, channel: &str, upstream_model: &str) {
        self.record.channel = Some(channel.to_owned());
        self.record.upstream_model = Some(upstream_model.to_owned());
    }

    /// Token counts an upstream reported outside a stream (embeddings).
    pub fn counted(&mut self, prompt_tokens: Option<u64>) {
        self.prompt_tokens = prompt_tokens;
        self.completion_tokens = Some(0);
    }

    /// Notes one event of the answer.
    pub fn saw(&mut self, event: &Result<ChatEvent, Error>) {
        if self.record.ttft_ms.is_none() {
            self.record.ttft_ms = Some(self.started.elapsed().as_millis() as u64);
        }
        match event {
            Ok(ChatEvent::Text(t) | ChatEvent::Reasoning(t)) => self.output_chars += t.len(),
            Ok(ChatEvent::ToolCall {
                name, arguments_delta, ..
            }) => self.output_chars += arguments_delta.len() + name.as_ref().map_or(0, String::len),
            Ok(ChatEvent::Usage(usage)) => {
                self.prompt_tokens = usage.prompt_tokens.or(self.prompt_tokens);
                self.completion_tokens = usage.completion_tokens.or(self.completion_tokens);
            }
            Ok(ChatEvent::Finish(_)) => self.finish(200),
            Ok(ChatEvent::Logprobs(_)) => {}
            Err(error) => self.finish(error.status()),
        }
    }

    /// The request ended with `status` (an error before any answer, or its end).
    pub fn finish(&mut self, status: u16) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let answered = self.record.channel.is_some();
        let estimated = answered && (self.prompt_tokens.is_none() || self.completion_tokens.is_none());
        let prompt = self
            .prompt_tokens
            .unwrap_or(if answered { self.prompt_estimate } else { 0 });
        let completion = self.completion_tokens.unwrap_or(estimate_tokens(self.output_chars));
        if let Some(ticket) = self.ticket.take() {
            ticket.settle(prompt + completion);
        }
        self.record.status = status;
        self.record.latency_ms = self.started.elapsed().as_millis() as u64;
        self.record.prompt_tokens = prompt;
        self.record.completion_tokens = completion;
        self.record.estimated = estimated;
        self.log.record(std::mem::take(&mut self.record));
    }
}

/// A client that hung up mid-answer: the record says so (499, as nginx logs it), with
/// what was produced until then.
impl Drop for Meter {
    fn drop(&mut self) {
        self.finish(499);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{FinishReason, Usage};

    #[tokio::test]
    async fn usage_an_upstream_did_not_report_is_estimated_and_flagged() {
        let dir = std::env::temp_dir().join(format!("diglot-meter-{}", std::process::id()));
        let store = crate::store::open(&dir).unwrap();
        let log = Arc::new(UsageLog::start(Some(store.clone())));
        let caller = Caller::anonymous("ollama");

        let mut meter = Meter::start(log.clone(), &caller, "m");
        meter.admitted(
            Arc::new(crate::gateway::limits::Limits::new(Default::default()))
                .admit(&caller, 10)
                .unwrap(),
            12,
        );
        meter.routed("default", "m-upstream");
        for event in [ChatEvent::Text("abcdefgh".into()), ChatEvent::Text("ij".into())] {
            meter.saw(&Ok(event));
        }
        meter.saw(&Ok(ChatEvent::Finish(FinishReason::Stop)));

        // The upstream's counts win when it sends them.
        let mut reported = Meter::start(log.clone(), &caller, "m");
        reported.routed("default", "m");
        reported.saw(&Ok(ChatEvent::Text("abcdefgh".into())));
        reported.saw(&Ok(ChatEvent::Usage(Usage {
            prompt_tokens: Some(31),
            completion_tokens: Some(7),
            ..Default::default()
        })));
        reported.saw(&Ok(ChatEvent::Finish(FinishReason::Stop)));

        // A client that hangs up mid-answer.
        let mut left = Meter::start(log.clone(), &caller, "m");
        left.routed("default", "m");
        left.saw(&Ok(ChatEvent::Text("abcd".into())));
        drop(left);

        log.flush().await;
        let mut rows = store.recent_usage(10).unwrap();
        rows.reverse();
        let summary: Vec<(u16, u64, u64, bool)> = rows
            .iter()
            .map(|r| (r.status, r.prompt_tokens, r.completion_tokens, r.estimated))
            .collect();
        assert_eq!(summary, [(200, 12, 3, true), (200, 31, 7, false), (499, 0, 1, true)]);
        assert_eq!(rows[0].upstream_model.as_deref(), Some("m-upstream"));
        assert!(rows[0].ttft_ms.is_some());
    }
}
