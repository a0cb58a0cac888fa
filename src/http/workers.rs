//! Serving on one single-threaded runtime per core, each with its own listening socket
//! (see `listener::bind`) and its own upstream connections: nginx's worker model. A
//! connection and its upstream calls then live on one thread from start to end. One
//! work-stealing runtime handed them between threads, and the wake-ups that took cost a
//! third of diglot's CPU per request (80 → 52 µs, 15,600 → 24,200 req/s at 64
//! connections). Background work (usage writes, health checks, reloads, signals) stays on
//! the runtime that started it.

use std::io::{Error as IoError, Result as IoResult};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;

use salvo::server::ServerHandle;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::App;
use super::listener::acceptor;
use crate::protocol::workers;

/// The running workers.
pub struct Workers {
    handles: Vec<ServerHandle>,
    served: Vec<oneshot::Receiver<()>>,
    release: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// One worker per listener, each serving `app` on its own thread; returns once all
    /// of them serve.
    pub async fn start(listeners: Vec<TcpListener>, app: &Arc<App>) -> IoResult<Self> {
        let release = CancellationToken::new();
        let (mut handles, mut served, mut threads) = (Vec::new(), Vec::new(), Vec::new());
        let mut starting = Vec::new();
        for (number, listener) in (1..).zip(listeners) {
            let (ready, started) = oneshot::channel();
            let (done, finished) = oneshot::channel();
            let (app, release) = (app.clone(), release.clone());
            let thread = std::thread::Builder::new()
                .name(format!("diglot-worker-{number}"))
                .spawn(move || run(number, listener, &app, ready, done, &release))?;
            threads.push(thread);
            starting.push(started);
            served.push(finished);
        }
        for started in starting {
            let handle = started
                .await
                .unwrap_or_else(|_| Err(IoError::other("a worker thread ended while starting")));
            match handle {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    release.cancel();
                    handles.iter().for_each(|h| h.stop_forceful());
                    return Err(e);
                }
            }
        }
        Ok(Self {
            handles,
            served,
            release,
            threads,
        })
    }

    /// What stops every worker's server.
    pub fn handles(&self) -> Vec<ServerHandle> {
        self.handles.clone()
    }

    /// Waits until every worker's server has stopped (its connections all closed).
    pub async fn served(&mut self) {
        for served in &mut self.served {
            let _ = served.await;
        }
    }

    /// Lets the workers end (what their requests started has run meanwhile) and waits
    /// for their threads.
    pub async fn release(self) {
        self.release.cancel();
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
    }
}

/// A worker's thread: its runtime, serving `listener` until its server is stopped, then
/// running what the requests started until `release`.
fn run(
    number: usize,
    listener: TcpListener,
    app: &Arc<App>,
    ready: oneshot::Sender<IoResult<ServerHandle>>,
    done: oneshot::Sender<()>,
    release: &CancellationToken,
) {
    workers::enter(number);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return drop(ready.send(Err(e))),
    };
    runtime.block_on(async {
        let acceptor = match acceptor(listener) {
            Ok(acceptor) => acceptor,
            Err(e) => return drop(ready.send(Err(e))),
        };
        let server = super::server(acceptor, app);
        let _ = ready.send(Ok(server.handle()));
        server.serve(app.router()).await;
        let _ = done.send(());
        // Usage records, settlements and cache fills the requests started finish here.
        release.cancelled().await;
    });
}
