//! Plain-HTTP upstream connections driven by the task of the request that uses them.
//!
//! hyper's pooled client runs each connection in a task of its own and hands an answer's
//! body over through a channel that holds one frame: a burst of 256 chunks already read
//! took 256 rounds through both tasks, and through every layer of the stream above them.
//! Here the request's own task polls its connection (hyper's `client::conn::http1`), so
//! the frames of one read are decoded in one go and no task is spawned per connection,
//! as nginx's workers do it. Idle connections wait in a pool per serving worker; one the
//! upstream closed meanwhile is noticed when it is taken out, and a request it could not
//! take is sent on a new connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::uri::Authority;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::transport::Body;

/// How many idle connections to one upstream a worker keeps for reuse: after a burst of
/// 2,000 streams an unbounded pool held 2,000 idle connections (their buffers and
/// descriptors). Connections past this many close when their answer ends.
pub const MAX_IDLE: usize = 32;

/// How long an idle connection is kept (by reqwest's pools too).
pub const MAX_IDLE_TIME: Duration = Duration::from_secs(90);

type Driver = Connection<TokioIo<TcpStream>, Body>;

/// Idle connections to an upstream, for the requests of one worker. Connections are
/// boxed: hyper's state is kilobytes, copied on every move.
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    connect_timeout: Duration,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

struct Conn {
    authority: Authority,
    sender: SendRequest<Body>,
    /// Reads and writes the connection when polled; none once it has ended.
    driver: Option<Driver>,
}

/// Why a request to a plain-HTTP upstream got no answer.
#[derive(Debug)]
pub enum DirectError {
    Connect(std::io::Error),
    Http(hyper::Error),
}

impl std::fmt::Display for DirectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirectError::Connect(e) => write!(f, "cannot connect: {e}"),
            DirectError::Http(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DirectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DirectError::Connect(e) => Some(e),
            DirectError::Http(e) => Some(e),
        }
    }
}

impl DirectError {
    /// The connection could not be made within the connect timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, DirectError::Connect(e) if e.kind() == std::io::ErrorKind::TimedOut)
    }
}

impl Pool {
    /// A pool whose idle connections are closed after `MAX_IDLE_TIME` (looked at by a task
    /// of the calling runtime for as long as the pool lives).
    pub fn new(connect_timeout: Duration) -> Arc<Self> {
        let pool = Arc::new(Self {
            idle: Mutex::new(Vec::new()),
            connect_timeout,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reap(Arc::downgrade(&pool)));
        }
        pool
    }

    /// Sends `request` (an absolute URI) on an idle connection or a new one, and waits for
    /// the answer's head; the body reads on through the same connection.
    pub async fn send(
        self: &Arc<Self>,
        mut request: http::Request<Body>,
    ) -> Result<http::Response<InlineBody>, DirectError> {
        let authority = origin_form(&mut request)?;
        loop {
            let (mut conn, reused) = match self.checkout(&authority) {
                Some(conn) => (conn, true),
                None => (self.connect(authority.clone()).await?, false),
            };
            match conn.exchange(request).await {
                Ok(answer) => {
                    let pool = Arc::downgrade(self);
                    return Ok(answer.map(|incoming| InlineBody {
                        incoming,
                        conn: Some(conn),
                        pool,
                    }));
                }
                // An idle connection the upstream closed as the request went out: the
                // request was not sent, so it goes on another.
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(DirectError::Http(e.into_error())),
                },
            }
        }
    }

    /// The idle connections; a panic elsewhere while they were held leaves them usable.
    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest idle connection to `authority` that is still open.
    fn checkout(&self, authority: &Authority) -> Option<Box<Conn>> {
        let mut idle = self.idle();
        while let Some(at) = idle.iter().rposition(|i| i.conn.authority == *authority) {
            let Idle { mut conn, since } = idle.remove(at);
            if since.elapsed() < MAX_IDLE_TIME && conn.is_ready() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, conn: Box<Conn>) {
        let mut idle = self.idle();
        if idle.iter().filter(|i| i.conn.authority == conn.authority).count() >= MAX_IDLE {
            return;
        }
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Closes the connections idle too long, and those the upstream closed.
    fn prune(&self) {
        self.idle()
            .retain_mut(|i| i.since.elapsed() < MAX_IDLE_TIME && i.conn.is_ready());
    }

    /// Connects to the authority's addresses in turn, each within its share of the
    /// connect timeout (a name whose first address drops packets must leave time for the
    /// next one, as hyper-util's connector does).
    async fn connect(&self, authority: Authority) -> Result<Box<Conn>, DirectError> {
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let timed_out = |within: Duration| {
            DirectError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {} s", within.as_secs_f64()),
            ))
        };
        let addresses: Vec<_> = tokio::time::timeout(self.connect_timeout, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| timed_out(self.connect_timeout))?
            .map_err(DirectError::Connect)?
            .collect();
        let each = self.connect_timeout / addresses.len().max(1) as u32;
        let mut failed = timed_out(self.connect_timeout);
        let mut stream = None;
        for address in addresses {
            match tokio::time::timeout(each, TcpStream::connect(address)).await {
                Ok(Ok(connected)) => {
                    stream = Some(connected);
                    break;
                }
                Ok(Err(e)) => failed = DirectError::Connect(e),
                Err(_) => failed = timed_out(each),
            }
        }
        let stream = stream.ok_or(failed)?;
        // Without Nagle: else each small write waits for the last one's ACK.
        stream.set_nodelay(true).map_err(DirectError::Connect)?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(DirectError::Http)?;
        Ok(Box::new(Conn {
            authority,
            sender,
            driver: Some(driver),
        }))
    }
}

/// Looks at a pool's idle connections now and then, until the pool is gone.
async fn reap(pool: Weak<Pool>) {
    loop {
        tokio::time::sleep(MAX_IDLE_TIME / 3).await;
        match pool.upgrade() {
            Some(pool) => pool.prune(),
            None => return,
        }
    }
}

/// Writes `request`'s URI as a path (what a server expects from a client, not a proxy)
/// with its host and port as the `Host` header; returns the authority.
fn origin_form(request: &mut http::Request<Body>) -> Result<Authority, DirectError> {
    let uri = request.uri().clone();
    let authority = uri.authority().cloned().ok_or_else(|| {
        DirectError::Connect(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("'{uri}' names no host"),
        ))
    })?;
    // Host and port: what follows any `user:password@`.
    let host = authority.as_str().rsplit('@').next().unwrap_or_default();
    if !request.headers().contains_key(HOST)
        && let Ok(host) = HeaderValue::from_str(host)
    {
        request.headers_mut().insert(HOST, host);
    }
    let path = match uri.path_and_query() {
        Some(path) if !path.as_str().is_empty() => path.clone(),
        _ => http::uri::PathAndQuery::from_static("/"),
    };
    *request.uri_mut() = http::Uri::from(path);
    Ok(authority)
}

impl Conn {
    /// Sends `request` and drives the connection until the answer's head is in.
    async fn exchange(
        &mut self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, hyper::client::conn::TrySendError<http::Request<Body>>> {
        let mut answer = std::pin::pin!(self.sender.try_send_request(request));
        std::future::poll_fn(|cx| {
            // The connection first: it writes the request and reads the head.
            self.drive(cx);
            answer.as_mut().poll(cx)
        })
        .await
    }

    /// Lets the connection read and write what it can; once it has ended it is dropped,
    /// which answers whatever still waits on it.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver
            && Pin::new(driver).poll(cx).is_ready()
        {
            self.driver = None;
        }
    }

    /// Whether the connection can take a request now: still open (polling it reads a
    /// close the upstream sent meanwhile), and done with its last answer.
    fn is_ready(&mut self) -> bool {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        self.drive(&mut cx);
        self.driver.is_some() && matches!(self.sender.poll_ready(&mut cx), Poll::Ready(Ok(())))
    }
}

/// An answer's body, read by polling its connection in the reader's own task. Read to
/// its end, the connection goes back to the pool; dropped before, it closes (which is
/// how an upstream learns that its client hung up), unless the end was all that was left.
pub struct InlineBody {
    incoming: Incoming,
    conn: Option<Box<Conn>>,
    pool: Weak<Pool>,
}

impl InlineBody {
    fn release(&mut self) {
        if let (Some(mut conn), Some(pool)) = (self.conn.take(), self.pool.upgrade())
            && conn.is_ready()
        {
            pool.checkin(conn);
        }
    }

    /// The next frame, the connection driven in the caller's task.
    fn poll_inline(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut driven = false;
        loop {
            match Pin::new(&mut self.incoming).poll_frame(cx) {
                Poll::Ready(None) => {
                    self.release();
                    return Poll::Ready(None);
                }
                Poll::Ready(frame) => return Poll::Ready(frame),
                Poll::Pending if driven => return Poll::Pending,
                Poll::Pending => {}
            }
            // The connection reads on and hands over the next frame, if it has one.
            if let Some(conn) = &mut self.conn {
                conn.drive(cx);
            }
            driven = true;
        }
    }
}

impl hyper::body::Body for InlineBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.get_mut().poll_inline(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// A reader that stopped at its answer's last event (Ollama's `done`, OpenAI's `[DONE]`)
/// leaves the body's end unread; when it has come in meanwhile (the upstream writes it
/// moments after), the connection is still good for the next request. Anything else, a
/// client that hung up mid-answer above all, closes it.
impl Drop for InlineBody {
    fn drop(&mut self) {
        if self.conn.is_some() {
            let mut cx = Context::from_waker(futures::task::noop_waker_ref());
            let _ = self.poll_inline(&mut cx);
        }
    }
}
