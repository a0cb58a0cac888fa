//! A stop in progress: the listener closes and `/health` fails at once, open requests get
//! `server.drain_secs` to finish, and streams still open then end with an error event in
//! their own protocol instead of a cut connection.

use std::future::Future;
use std::task::{Poll, ready};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::ir::{ChatStream, Error, ErrorKind};

#[derive(Clone, Default)]
pub struct Drain {
    /// Fires on SIGTERM or SIGINT: stop accepting, answer `/health` with 503.
    pub stopping: CancellationToken,
    /// Fires when the listening socket is closed.
    pub closed: CancellationToken,
    /// Fires when the drain time is up: open chat streams end with an error.
    pub deadline: CancellationToken,
}

impl Drain {
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// `stream`, ended with an `Unavailable` error if the drain deadline comes first
    /// (dropping the rest cancels its upstream call). The deadline is looked at when the
    /// stream waits, not before every event: each look locks the token, which all
    /// streams share, and a burst of events is over within moments anyway.
    pub fn cut(&self, stream: ChatStream) -> ChatStream {
        let mut deadline = Box::pin(self.deadline.clone().cancelled_owned());
        let mut stream = Some(stream);
        // A plain poll function, not a generator: it sits under every event of every
        // stream.
        Box::pin(futures::stream::poll_fn(move |cx| {
            let Some(inner) = stream.as_mut() else {
                return Poll::Ready(None);
            };
            match inner.poll_next_unpin(cx) {
                Poll::Ready(Some(item)) => return Poll::Ready(Some(item)),
                Poll::Ready(None) => {
                    stream = None;
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
            ready!(deadline.as_mut().poll(cx));
            stream = None;
            Poll::Ready(Some(Err(Error::new(
                ErrorKind::Unavailable,
                "diglot is shutting down and this answer was still running at the end of its drain \
                 time (server.drain_secs); send the request again",
            ))))
        }))
    }
}
