//! What the stream targets share: a fuzz input read as a streamed body (a header of
//! chunk size, frame limit and one flag, then the body) and a runtime to drain it on.

use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use diglot::ir::ChatStream;
use diglot::protocol::framing::{Format, frames};
use diglot::protocol::upstream::Frames;
use futures::StreamExt;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds")
});

pub struct Input {
    chunk: usize,
    max: usize,
    /// A decoder option (SSE: think tags; NDJSON: chat or generate); a stream target
    /// whose decoder has none ignores it.
    #[allow(dead_code)]
    pub flag: bool,
    body: Vec<u8>,
}

impl Input {
    pub fn read(data: &[u8]) -> Option<Self> {
        let [chunk, max, flag, body @ ..] = data else { return None };
        Some(Self {
            chunk: usize::from(*chunk).max(1),
            // Small limits reach the "too large" path; 0 stands for the default 16 MiB.
            max: match max {
                0 => 16 << 20,
                m => usize::from(*m) * 8,
            },
            flag: flag & 1 == 1,
            body: body.to_vec(),
        })
    }

    /// The body as an upstream sends it, in chunks, framed as `format`.
    pub fn frames(&self, format: Format) -> Frames {
        let chunks: Vec<Result<Bytes, std::io::Error>> = self
            .body
            .chunks(self.chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(frames(futures::stream::iter(chunks), format, self.max, Duration::from_secs(60), "http://fuzz".into()))
    }
}

/// Reads every event of the stream `events` makes (inside the runtime, as its timers
/// need); an error ends the stream, as it does for a client.
pub fn drain(events: impl FnOnce() -> ChatStream) {
    RUNTIME.block_on(async {
        let events = events();
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            if event.is_err() {
                break;
            }
        }
    });
}
