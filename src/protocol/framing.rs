//! An upstream's streamed body cut into frames: NDJSON lines (Ollama) or the `data` of
//! SSE events (OpenAI-compatible servers). Owns the one bound on a frame's size
//! (`max_line_bytes`) and the idle timeout between bytes, and does it in linear time:
//! each byte is scanned for a line end once, however the body is split into chunks.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};

use crate::ir::{Error, ErrorKind};

/// How a body is cut into frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON value per `\n`-terminated line; blank lines are skipped.
    Ndjson,
    /// Server-sent events: `data:` lines joined until a blank line; comments and other
    /// fields (`event`, `id`, `retry`) are skipped.
    Sse,
}

impl Format {
    fn unit(self) -> &'static str {
        match self {
            Format::Ndjson => "a line",
            Format::Sse => "an event",
        }
    }
}

/// Why a body could not be framed.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A frame grew past the limit before it ended.
    TooLarge,
    /// A frame is not UTF-8.
    NotUtf8,
}

/// The framing state: bytes received but not yet framed, and for SSE the event being
/// built. Memory is bounded by the limit plus one chunk.
pub struct Framer {
    format: Format,
    max: usize,
    buffer: BytesMut,
    /// Bytes of `buffer` already searched for a line end.
    scanned: usize,
    /// The last line ended in `\r`: a `\n` right after belongs to it (SSE).
    after_cr: bool,
    /// SSE: the `data` of the event so far, its lines joined by `\n`.
    data: Vec<u8>,
    /// SSE: a `data` field was seen for this event (it may be empty).
    has_data: bool,
}

impl Framer {
    pub fn new(format: Format, max: usize) -> Self {
        Self {
            format,
            max,
            buffer: BytesMut::new(),
            scanned: 0,
            after_cr: false,
            data: Vec::new(),
            has_data: false,
        }
    }

    /// Takes the next chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete frame, `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<String>, FrameError> {
        while let Some((line, taken)) = self.next_line()? {
            let frame = self.take(line);
            self.buffer.advance(taken);
            if let Some(frame) = frame? {
                return Ok(Some(frame));
            }
        }
        let pending = self.buffer.len() + self.data.len();
        if pending > self.max {
            return Err(FrameError::TooLarge);
        }
        Ok(None)
    }

    /// The body ended: the last frame if one was left without its terminator.
    pub fn finish(&mut self) -> Result<Option<String>, FrameError> {
        if !self.buffer.is_empty() {
            let frame = self.take(self.buffer.len());
            self.buffer.clear();
            self.scanned = 0;
            if let Some(frame) = frame? {
                return Ok(Some(frame));
            }
        }
        match self.format {
            Format::Sse if self.has_data => self.dispatch(),
            _ => Ok(None),
        }
    }

    /// The next whole line: its length without its terminator, and the bytes it takes up
    /// with it (both from the start of the buffer, where it stays until taken). Only bytes
    /// not searched before are searched.
    fn next_line(&mut self) -> Result<Option<(usize, usize)>, FrameError> {
        if self.after_cr && self.buffer.first() == Some(&b'\n') {
            self.buffer.advance(1);
        }
        if !self.buffer.is_empty() {
            self.after_cr = false;
        }
        let unseen = &self.buffer[self.scanned..];
        let end = match self.format {
            Format::Ndjson => memchr::memchr(b'\n', unseen),
            Format::Sse => memchr::memchr2(b'\n', b'\r', unseen),
        };
        let Some(end) = end.map(|i| self.scanned + i) else {
            self.scanned = self.buffer.len();
            return Ok(None);
        };
        if end > self.max {
            return Err(FrameError::TooLarge);
        }
        self.scanned = 0;
        if self.buffer[end] == b'\r' {
            self.after_cr = true;
        } else if self.format == Format::Ndjson && end > 0 && self.buffer[end - 1] == b'\r' {
            return Ok(Some((end - 1, end + 1)));
        }
        Ok(Some((end, end + 1)))
    }

    /// The part in a frame of the buffer's first `len` bytes, a line: an NDJSON line is
    /// one; an SSE line adds to the event, and a blank one dispatches it. The frame is
    /// copied out of the buffer once, and the buffer is never split (each split of a
    /// shared buffer was an atomic count taken and dropped).
    fn take(&mut self, len: usize) -> Result<Option<String>, FrameError> {
        let line = &self.buffer[..len];
        match self.format {
            Format::Ndjson if line.iter().all(u8::is_ascii_whitespace) => Ok(None),
            Format::Ndjson => utf8(line.to_vec()).map(Some),
            Format::Sse if line.is_empty() => self.dispatch(),
            Format::Sse => {
                let (field, value) = match memchr::memchr(b':', line) {
                    Some(0) => return Ok(None),
                    Some(colon) => {
                        let value = &line[colon + 1..];
                        (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                    }
                    None => (line, &b""[..]),
                };
                if field == b"data" {
                    // The data lines of an event are joined by `\n`.
                    let joint = usize::from(self.has_data);
                    if self.data.len() + joint + value.len() > self.max {
                        return Err(FrameError::TooLarge);
                    }
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                }
                Ok(None)
            }
        }
    }

    /// The event built so far, if it has data.
    fn dispatch(&mut self) -> Result<Option<String>, FrameError> {
        if !std::mem::take(&mut self.has_data) {
            return Ok(None);
        }
        utf8(std::mem::take(&mut self.data)).map(Some)
    }
}

fn utf8(bytes: Vec<u8>) -> Result<String, FrameError> {
    String::from_utf8(bytes).map_err(|_| FrameError::NotUtf8)
}

/// The frames of a streamed body as they complete. A silence longer than `idle` ends it
/// with a timeout; a frame over `max` bytes, or a break in the body, with an error that
/// says so. `shown` names the upstream in messages.
pub fn frames<E>(
    body: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    format: Format,
    max: usize,
    idle: Duration,
    shown: String,
) -> impl Stream<Item = Result<String, Error>> + Send
where
    E: std::error::Error + Send + 'static,
{
    async_stream::stream! {
        futures::pin_mut!(body);
        // One timer for the whole stream, moved only when it goes off before `idle` has
        // passed since the last chunk: moving it on every chunk was a timer-wheel update
        // per chunk.
        let timer = tokio::time::sleep(idle);
        futures::pin_mut!(timer);
        let mut last_chunk = tokio::time::Instant::now();
        let mut framer = Framer::new(format, max);
        let failed = |e: FrameError| match e {
            FrameError::TooLarge => Error::upstream(
                502,
                format!(
                    "{shown} sent {} larger than {max} bytes (the limit is the channel's max_line_bytes; raise it in the profile to accept larger ones)",
                    format.unit()
                ),
            ),
            FrameError::NotUtf8 => Error::upstream(502, format!("{shown} sent {} that is not UTF-8", format.unit())),
        };
        loop {
            loop {
                match framer.next_frame() {
                    Ok(Some(frame)) => yield Ok(frame),
                    Ok(None) => break,
                    Err(e) => { yield Err(failed(e)); return; }
                }
            }
            let next = loop {
                tokio::select! {
                    biased;
                    next = body.next() => break Some(next),
                    () = &mut timer => {
                        let due = last_chunk + idle;
                        if tokio::time::Instant::now() >= due {
                            break None;
                        }
                        timer.as_mut().reset(due);
                    }
                }
            };
            let Some(next) = next else {
                yield Err(Error::new(ErrorKind::Timeout, format!("{shown} sent nothing for {} s", idle.as_secs_f64())));
                return;
            };
            match next {
                Some(Ok(chunk)) => {
                    last_chunk = tokio::time::Instant::now();
                    framer.push(&chunk);
                }
                Some(Err(e)) => {
                    yield Err(Error::new(ErrorKind::UpstreamUnavailable, format!("the stream from {shown} broke: {}", super::upstream::root_cause(&e))));
                    return;
                }
                None => {
                    match framer.finish() {
                        Ok(Some(frame)) => yield Ok(frame),
                        Ok(None) => {}
                        Err(e) => yield Err(failed(e)),
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The idle timer is moved lazily: chunks that keep coming, each within `idle` of
    /// the last, never time out however long the stream runs; a silence past it does.
    #[tokio::test]
    async fn only_a_silence_longer_than_idle_times_out() {
        let idle = Duration::from_millis(400);
        let body = async_stream::stream! {
            for i in 0..8 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                yield Ok::<_, std::io::Error>(Bytes::from(format!("{{\"n\":{i}}}\n")));
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
            yield Ok(Bytes::from_static(b"{\"late\":true}\n"));
        };
        let started = tokio::time::Instant::now();
        let items: Vec<_> = frames(body, Format::Ndjson, 1024, idle, "the upstream".into())
            .collect()
            .await;
        assert_eq!(items.len(), 9, "{items:?}");
        assert!(items[..8].iter().all(Result::is_ok), "{items:?}");
        let timeout = items[8].as_ref().unwrap_err();
        assert_eq!(timeout.kind, ErrorKind::Timeout, "{timeout:?}");
        // Timed out at the silence's idle time, not at the first timer setting.
        assert!(
            started.elapsed() >= Duration::from_millis(1100),
            "{:?}",
            started.elapsed()
        );
    }

    fn all(format: Format, max: usize, chunks: &[&[u8]]) -> Result<Vec<String>, FrameError> {
        let mut framer = Framer::new(format, max);
        let mut frames = Vec::new();
        for chunk in chunks {
            framer.push(chunk);
            while let Some(frame) = framer.next_frame()? {
                frames.push(frame);
            }
        }
        frames.extend(framer.finish()?);
        Ok(frames)
    }

    #[test]
    fn sse_events_join_data_lines_across_any_split() {
        // The shapes the SSE spec allows: CRLF, lone CR, comments, other fields, a
        // multi-line data, "data" without a colon, and a last event without its blank line.
        let body = b": ping\r\nevent: x\r\ndata: {\"a\":1}\r\n\r\ndata:b\rdata\r\rid: 7\ndata: c\n\ndata: [DONE]";
        let want = ["{\"a\":1}", "b\n", "c", "[DONE]"];
        assert_eq!(all(Format::Sse, 64, &[body]).unwrap(), want);
        for split in 0..body.len() {
            let (a, b) = body.split_at(split);
            assert_eq!(all(Format::Sse, 64, &[a, b]).unwrap(), want, "split at {split}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(all(Format::Sse, 64, &bytes).unwrap(), want);
    }

    #[test]
    fn ndjson_lines_skip_blank_ones_and_strip_crlf() {
        let body = b"{\"a\":1}\r\n\n  \n{\"b\":2}\n{\"c\":3}";
        assert_eq!(
            all(Format::Ndjson, 64, &[body]).unwrap(),
            ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]
        );
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_it_ends() {
        for format in [Format::Ndjson, Format::Sse] {
            let mut framer = Framer::new(format, 16);
            framer.push(b"data: 0123456789");
            assert_eq!(framer.next_frame(), Ok(None), "{format:?}: at the limit so far");
            framer.push(b"abcdef");
            assert_eq!(framer.next_frame(), Err(FrameError::TooLarge), "{format:?}");
        }
        // SSE: many short data lines add up to one event.
        let lines = b"data: 0123\n".repeat(4);
        assert_eq!(all(Format::Sse, 16, &[&lines]), Err(FrameError::TooLarge));
        assert_eq!(all(Format::Sse, 16, &[b"data: 01234567\n\n"]).unwrap(), ["01234567"]);
    }

    #[test]
    fn a_long_line_in_small_chunks_is_scanned_once() {
        // 8 MiB in 1 KiB chunks: a rescan from the start on every chunk would read
        // 32 GiB; one pass reads 8 MiB. Counted in bytes scanned, not in time.
        let mut framer = Framer::new(Format::Sse, 16 << 20);
        let chunk = [b'x'; 1024];
        framer.push(b"data: ");
        assert_eq!(framer.next_frame(), Ok(None));
        let mut scanned = 0;
        for _ in 0..8 * 1024 {
            framer.push(&chunk);
            let before = framer.scanned;
            assert_eq!(framer.next_frame(), Ok(None));
            scanned += framer.scanned - before;
        }
        assert_eq!(scanned, 8 << 20);
        framer.push(b"\n\n");
        assert_eq!(framer.next_frame().unwrap().map(|f| f.len()), Some(8 << 20));
    }

    #[test]
    fn frames_that_are_not_utf8_are_refused() {
        assert_eq!(all(Format::Ndjson, 64, &[b"\xff\n"]), Err(FrameError::NotUtf8));
        assert_eq!(all(Format::Sse, 64, &[b"data: \xff\n\n"]), Err(FrameError::NotUtf8));
    }
}
