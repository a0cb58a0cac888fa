//! Streamed response bodies leave in as few writes as their pace allows.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::Stream;

/// The most a burst of frames is joined into before it is written anyway.
pub const MAX_JOINED_BYTES: usize = 16 * 1024;

/// Turns given back to the scheduler without a new frame before the held ones are written.
const IDLE_ROUNDS: u8 = 2;

/// A frame that ends this much silence is written at once: it is a model's next token, not
/// part of a burst, and waiting could only delay it.
const QUIET: Duration = Duration::from_millis(1);

/// Joins a burst of frames into one write. Every write is a syscall and a TCP segment
/// (for 256 small chunks they cost more than translating them). A plain-HTTP upstream's
/// frames come in one go (its connection is read in this task); a TLS upstream's body
/// (reqwest's) hands over one frame per task switch even when its whole answer already
/// sits in the read buffer, so frames that are all there "now" are never ready at once.
///
/// So after a frame this stream hands the turn back to the scheduler, which lets the
/// upstream's connection hand over its next frame, and writes what it holds when
/// `IDLE_ROUNDS` turns in a row brought nothing new (or `MAX_JOINED_BYTES` are held).
/// One turn is not enough: with hyper 1.12 the next frame of an answer already read
/// showed up after the second. The first frame, and any frame after `QUIET` without a
/// write, goes out at once: a stream at a model's pace is written as it comes, and the
/// first token never waits (each turn handed back can wake another worker thread,
/// tens of microseconds on a VM).
pub struct Coalesce<S> {
    frames: S,
    held: Vec<Bytes>,
    held_bytes: usize,
    /// Turns handed back to the scheduler since the last frame, with frames held.
    idle_rounds: u8,
    /// When a frame was last handed on (none yet: the first goes at once).
    last_write: Option<Instant>,
    /// `QUIET`; tests that must not depend on the machine's pace set it long.
    quiet: Duration,
    ended: bool,
}

impl<S> Coalesce<S> {
    pub fn new(frames: S) -> Self {
        Self {
            frames,
            held: Vec::new(),
            held_bytes: 0,
            idle_rounds: 0,
            last_write: None,
            quiet: QUIET,
            ended: false,
        }
    }

    #[cfg(test)]
    fn with_quiet(frames: S, quiet: Duration) -> Self {
        Self {
            quiet,
            ..Self::new(frames)
        }
    }

    /// What is held, as one frame.
    fn take(&mut self) -> Option<Result<Bytes, Infallible>> {
        self.last_write = Some(Instant::now());
        let total = std::mem::take(&mut self.held_bytes);
        let joined = match self.held.len() {
            0 => return None,
            1 => self.held.pop()?,
            _ => {
                let mut joined = BytesMut::with_capacity(total);
                self.held.drain(..).for_each(|frame| joined.extend_from_slice(&frame));
                joined.freeze()
            }
        };
        Some(Ok(joined))
    }
}

impl<S> Stream for Coalesce<S>
where
    S: Stream<Item = Result<Bytes, Infallible>> + Unpin,
{
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(this.take());
            }
            match Pin::new(&mut this.frames).poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if this.held.is_empty() {
                        let now = Instant::now();
                        if this.last_write.is_none_or(|at| now - at >= this.quiet) {
                            this.last_write = Some(now);
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    }
                    this.idle_rounds = 0;
                    this.held_bytes += frame.len();
                    this.held.push(frame);
                    if this.held_bytes >= MAX_JOINED_BYTES {
                        return Poll::Ready(this.take());
                    }
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending if this.held.is_empty() => return Poll::Pending,
                Poll::Pending if this.idle_rounds < IDLE_ROUNDS => {
                    this.idle_rounds += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => {
                    this.idle_rounds = 0;
                    return Poll::Ready(this.take());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::time::Duration;

    fn frame(text: &str) -> Result<Bytes, Infallible> {
        Ok(Bytes::copy_from_slice(text.as_bytes()))
    }

    fn text(item: Option<Result<Bytes, Infallible>>) -> Option<String> {
        item.map(|Ok(bytes)| String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_burst_handed_over_one_frame_per_task_switch_leaves_in_one_write() {
        // A channel of capacity 1 fed by another task: like hyper's body channel, the
        // next frame is there only after the producer has run again.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for word in ["a", "b", "c", "d"] {
                tx.send(frame(word)).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(frame("late")).await.unwrap();
        });
        // Silence long enough to write "late" at once never comes between the others, however
        // slow the machine.
        let mut joined = Coalesce::with_quiet(tokio_stream::wrappers::ReceiverStream::new(rx), Duration::from_secs(30));
        assert_eq!(
            text(joined.next().await).as_deref(),
            Some("a"),
            "the first frame goes at once"
        );
        assert_eq!(text(joined.next().await).as_deref(), Some("bcd"));
        assert_eq!(text(joined.next().await).as_deref(), Some("late"));
        assert_eq!(text(joined.next().await), None);
    }

    #[tokio::test]
    async fn frames_at_a_models_pace_are_written_as_they_come() {
        // The first frame must be handed on before the upstream sends the second: here
        // the second is sent only after the first came out.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut joined = Coalesce::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        tx.send(frame("one")).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(30), joined.next())
            .await
            .expect("the first frame waited for the second");
        assert_eq!(text(first).as_deref(), Some("one"));
        tx.send(frame("two")).await.unwrap();
        drop(tx);
        assert_eq!(text(joined.next().await).as_deref(), Some("two"));
        assert_eq!(text(joined.next().await), None);
    }

    #[tokio::test]
    async fn a_frame_after_silence_is_not_held_for_a_round() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut joined = Coalesce::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        tx.send(frame("a")).await.unwrap();
        assert_eq!(text(joined.next().await).as_deref(), Some("a"));
        tokio::time::sleep(QUIET * 2).await;
        tx.send(frame("b")).await.unwrap();
        match futures::poll!(joined.next()) {
            Poll::Ready(item) => assert_eq!(text(item).as_deref(), Some("b")),
            Poll::Pending => panic!("a frame after silence was held back"),
        }
    }

    #[tokio::test]
    async fn a_long_burst_is_cut_at_the_size_limit() {
        let big = "x".repeat(MAX_JOINED_BYTES / 4 + 1);
        let frames: Vec<_> = (0..8).map(|_| frame(&big)).collect();
        let mut joined = Coalesce::with_quiet(futures::stream::iter(frames), Duration::from_secs(30));
        let mut sizes = Vec::new();
        while let Some(Ok(bytes)) = joined.next().await {
            sizes.push(bytes.len());
        }
        // The first frame goes at once; the rest are joined up to the limit.
        assert_eq!(sizes, [big.len(), 4 * big.len(), 3 * big.len()]);
    }
}
