//! A stop in progress: the listener closes and `/health` fails at once, open requests get
//! `server.drain_secs` to finish, and streams still open then end with an error event in
//! their own protocol instead of a cut connection.

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
        let deadline = self.deadline.clone().cancelled_owned();
        Box::pin(async_stream::stream! {
            let mut stream = stream;
            futures::pin_mut!(deadline);
            loop {
                let next = tokio::select! {
                    biased;
                    item = stream.next() => Some(item),
                    () = &mut deadline => None,
                };
                match next {
                    Some(Some(item)) => yield item,
                    Some(None) => break,
                    None => {
                        yield Err(Error::new(
                            ErrorKind::Unavailable,
                            "diglot is shutting down and this answer was still running at the end of its \
                             drain time (server.drain_secs); send the request again",
                        ));
                        break;
                    }
                }
            }
        })
    }
}
