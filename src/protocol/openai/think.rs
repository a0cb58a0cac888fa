//! `<think>…</think>` at the start of an upstream's content (models served without a
//! reasoning parser) moved into reasoning, across chunk boundaries.

use crate::ir::ChatEvent;

/// Moves `<think>…</think>` at the start of the content into reasoning, even when the
/// tags are split across chunks.
#[derive(Default)]
pub(super) struct ThinkTags {
    /// Text held back because it may be the start of a tag.
    pending: String,
    state: ThinkState,
}

#[derive(Default, PartialEq)]
enum ThinkState {
    /// Nothing but whitespace seen yet: a `<think>` may still open.
    #[default]
    Start,
    Thinking,
    Answering,
}

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

impl ThinkTags {
    pub(super) fn split(&mut self, text: &str) -> Vec<ChatEvent> {
        self.pending.push_str(text);
        let mut events = Vec::new();
        loop {
            match self.state {
                ThinkState::Start => {
                    let trimmed = self.pending.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(OPEN) {
                        self.pending = rest.to_owned();
                        self.state = ThinkState::Thinking;
                    } else if OPEN.starts_with(trimmed) {
                        return events; // wait for more
                    } else {
                        self.state = ThinkState::Answering;
                    }
                }
                ThinkState::Thinking => match self.pending.find(CLOSE) {
                    Some(at) => {
                        let thought: String = self.pending.drain(..at + CLOSE.len()).take(at).collect();
                        if !thought.is_empty() {
                            events.push(ChatEvent::Reasoning(thought));
                        }
                        self.pending = self.pending.trim_start().to_owned();
                        self.state = ThinkState::Answering;
                    }
                    None => {
                        let keep = partial_suffix(&self.pending, CLOSE);
                        let emit = self.pending.len() - keep;
                        if emit > 0 {
                            events.push(ChatEvent::Reasoning(self.pending.drain(..emit).collect()));
                        }
                        return events;
                    }
                },
                ThinkState::Answering => {
                    if !self.pending.is_empty() {
                        events.push(ChatEvent::Text(std::mem::take(&mut self.pending)));
                    }
                    return events;
                }
            }
        }
    }

    pub(super) fn flush(&mut self) -> Vec<ChatEvent> {
        let rest = std::mem::take(&mut self.pending);
        match (rest.is_empty(), &self.state) {
            (true, _) => Vec::new(),
            (false, ThinkState::Thinking) => vec![ChatEvent::Reasoning(rest)],
            (false, _) => vec![ChatEvent::Text(rest)],
        }
    }
}

/// How many bytes at the end of `text` could begin `tag`.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(events: &[ChatEvent]) -> (String, String) {
        let mut reasoning = String::new();
        let mut text = String::new();
        for e in events {
            match e {
                ChatEvent::Reasoning(r) => reasoning.push_str(r),
                ChatEvent::Text(t) => text.push_str(t),
                _ => {}
            }
        }
        (reasoning, text)
    }

    #[test]
    fn think_tags_split_across_chunks() {
        let mut tags = ThinkTags::default();
        let mut events = Vec::new();
        for piece in ["<thi", "nk>Let me ", "think</thi", "nk>The answer", " is 4."] {
            events.extend(tags.split(piece));
        }
        events.extend(tags.flush());
        assert_eq!(texts(&events), ("Let me think".into(), "The answer is 4.".into()));
    }

    #[test]
    fn content_without_think_tags_passes_through() {
        let mut tags = ThinkTags::default();
        let events = tags.split("<b>bold</b>");
        assert_eq!(texts(&events), (String::new(), "<b>bold</b>".into()));
    }
}
