//! The HTTP layer: the listener, the route table, request reading and answer writing,
//! and one handler file per frontend (read → decode → gateway → encode → respond).
//! Reloads of the configuration are triggered from here (`SIGHUP`, the profile file
//! changing) and applied by the gateway.

mod anthropic;
mod drain;
mod frames;
mod hoops;
mod listener;
mod ollama;
mod openai;
mod origin;
mod reload;
pub mod request;
pub mod respond;
mod responses;
mod routes;
mod service;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use salvo::conn::Acceptor;
use salvo::conn::tcp::TcpAcceptor;
use salvo::fuse::FuseConfig;
use salvo::prelude::*;

use drain::Drain;
pub use frames::Coalesce;
use listener::{Connections, Listener};
pub use listener::{bind, bind_one};
use workers::Workers;

use crate::admin::Admin;
use crate::config::{Config, Source};
use crate::gateway::Gateway;
use crate::telemetry::exchange::Observer;

/// Everything a request handler needs.
pub struct App {
    pub gateway: Arc<Gateway>,
    admin: Arc<Admin>,
    /// What every request's exchange reports to.
    pub observer: Observer,
    routes: Vec<routes::Route>,
    /// Where the configuration was read from, to read it again (none when it was given
    /// whole, as tests and embedders do).
    source: Option<Source>,
    /// The client connections open and their bounds.
    connections: Arc<Connections>,
    drain: Drain,
}

impl App {
    pub async fn new(config: Config, source: Option<Source>) -> Result<Arc<Self>, String> {
        let observer_log = config.log.access;
        crate::protocol::workers::reserve(config.server.worker_count());
        let connections = Arc::new(Connections::new(&config.server));
        let gateway = Gateway::new(config).await?;
        let observer = Observer {
            metrics: gateway.metrics.clone(),
            access_log: observer_log,
            tail: Default::default(),
        };
        let admin = Admin::new(gateway.clone(), observer.tail.clone());
        Ok(Arc::new(Self {
            admin,
            gateway,
            observer,
            routes: routes::table(),
            source,
            connections,
            drain: Drain::default(),
        }))
    }

    /// The router: the hoops, then the route table.
    fn router(self: &Arc<Self>) -> Router {
        let config = &self.gateway.snapshot().config;
        Router::new()
            .hoop(affix_state::inject(self.clone()))
            .hoop(hoops::observe)
            .hoop(origin::guard)
            .hoop(hoops::admit)
            .hoop(hoops::authenticate)
            .push(routes::router(
                &self.routes,
                &config.base_path(),
                config.metrics.enabled,
                crate::admin::router(self.admin.clone()),
            ))
    }

    /// Reads the configuration again from where it came from and applies it (see
    /// `Gateway::apply`). `why` says what asked, for the log.
    pub async fn reload(self: &Arc<Self>, why: &'static str) -> Result<(), String> {
        reload::reload(self, why).await
    }
}

/// Serves on `listeners` (see `bind`), one worker thread each, until SIGINT or SIGTERM,
/// then drains (see `drain`). Reloads the configuration on SIGHUP and when the profile
/// file changes.
pub async fn serve(listeners: Vec<std::net::TcpListener>, app: Arc<App>) -> std::io::Result<()> {
    let mut workers = Workers::start(listeners, &app).await?;
    let handles = workers.handles();
    let drain = app.drain.clone();
    let drain_time = app.gateway.snapshot().config.server.drain();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!(
            drain_secs = drain_time.as_secs_f64(),
            "shutting down: no new connections; open requests may finish"
        );
        drain.stopping.cancel();
        // The listeners close on their next poll, which is at once: the servers poll
        // them until told to stop.
        let _ = tokio::time::timeout(Duration::from_secs(1), drain.closed.cancelled()).await;
        for handle in &handles {
            handle.stop_graceful(drain_time + CUT_GRACE);
        }
        tokio::time::sleep(drain_time).await;
        drain.deadline.cancel();
    });
    reload::on_hangup(&app);
    let _watch = reload::watch(&app);
    workers.served().await;
    // Every request has ended: write the usage records still queued.
    app.gateway.usage.flush().await;
    workers.release().await;
    tracing::info!("usage records flushed; stopped");
    Ok(())
}

/// After the drain deadline, how long streams get to write their final error event
/// before their connections are closed.
const CUT_GRACE: Duration = Duration::from_secs(5);

/// The server on `acceptor` with the `[server]` bounds: connections, header size, count
/// and time, idle time.
fn server(acceptor: TcpAcceptor, app: &Arc<App>) -> Server<Listener> {
    let settings = app.gateway.snapshot().config.server.clone();
    let listener = Listener::new(acceptor, app.connections.clone(), app.drain.clone());
    let fuse = FuseConfig::default()
        .with_http1_header_timeout(settings.header_timeout())
        .with_connection_idle_timeout(settings.idle_timeout());
    let mut server = Server::new(listener).fuse_config(fuse);
    // hyper refuses a head over its limits with a bare 431; up to twice the configured
    // ones it lets `hoops::admit` refuse it with a message naming the key.
    server
        .http1_mut()
        .max_buf_size(settings.max_header_bytes * 2)
        .max_headers(settings.max_headers * 2);
    server
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Starts diglot on `config.listen` in the background and returns the bound address
/// (port 0 picks a free one). For tests, examples and embedding: it serves on the
/// caller's runtime (`server.workers` is the binary's).
pub async fn spawn(config: Config) -> Result<SocketAddr, String> {
    spawn_app(config, None).await.map(|(addr, _)| addr)
}

/// Starts diglot from a profile in the background, watching the profile file as the
/// server does: the bound address and the app (whose `reload` re-reads the profile).
pub async fn spawn_profile(source: Source) -> Result<(SocketAddr, Arc<App>), String> {
    let config = source.load().map_err(|e| e.to_string())?;
    spawn_app(config, Some(source)).await
}

async fn spawn_app(config: Config, source: Option<Source>) -> Result<(SocketAddr, Arc<App>), String> {
    let addr = config.listen_addr().map_err(|e| e.to_string())?;
    let app = App::new(config, source).await?;
    let acceptor = bind_one(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = acceptor.holdings()[0]
        .local_addr
        .clone()
        .into_std()
        .ok_or("the listener has no IP address")?;
    let watch = reload::watch(&app);
    let router = app.router();
    let server = server(acceptor, &app);
    tokio::spawn(async move {
        let _watch = watch;
        server.serve(router).await;
    });
    Ok((local, app))
}
