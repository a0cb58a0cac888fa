//! The least a gateway on diglot's crates costs when put together the usual way: salvo in
//! front, hyper-util's pooled client behind (diglot itself drives its upstream connections
//! in the request's own task instead, `src/protocol/connections.rs`), the same listeners
//! (`TCP_NODELAY`) and runtimes (one single-threaded worker per core, each with its own
//! client), and nothing else. Every request is forwarded to the upstream as bytes (method,
//! path, query, body and the benchmark's `x-mock-*` knobs) and its answer is streamed back
//! as bytes: no JSON, no translation, no routing, no auth, no metrics.
//!
//! The benchmark measures it beside nginx and diglot, which splits diglot's added latency,
//! time to first token and memory per open stream into what the stack costs (this) and
//! what diglot's own work costs (the rest).
//!
//! ```sh
//! cargo run --release --example bare_proxy -- --listen 127.0.0.1:3001 --upstream http://127.0.0.1:11435
//! ```

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use salvo::http::{HeaderValue, StatusCode};
use salvo::prelude::*;
use std::sync::OnceLock;

struct Target {
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
}

thread_local! {
    /// This worker's client and the upstream's base URL.
    static TARGET: OnceLock<Target> = const { OnceLock::new() };
}

#[handler]
async fn forward(req: &mut Request, res: &mut Response) {
    let (client, upstream) = TARGET.with(|target| {
        let target = target.get().expect("set before serving");
        (target.client.clone(), target.upstream.clone())
    });
    let body = match req.payload().await {
        Ok(body) => body.clone(),
        Err(e) => return fail(res, StatusCode::BAD_REQUEST, e.to_string()),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = http::Request::builder()
        .method(req.method().clone())
        .uri(format!("{upstream}{path}"));
    // The body's type, and the benchmark's knobs for the mock (`x-mock-*`), which diglot's
    // instances send from their profiles instead.
    for (name, value) in req.headers() {
        if name == "content-type" || name.as_str().starts_with("x-mock-") {
            upstream = upstream.header(name, value.clone());
        }
    }
    let upstream = match upstream.body(Full::new(body)) {
        Ok(request) => request,
        Err(e) => return fail(res, StatusCode::BAD_REQUEST, e.to_string()),
    };
    match client.request(upstream).await {
        Ok(answer) => {
            res.status_code(answer.status());
            if let Some(content_type) = answer.headers().get("content-type") {
                res.headers_mut().insert("content-type", content_type.clone());
            }
            res.stream(answer.into_body().into_data_stream());
        }
        Err(e) => fail(res, StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

fn fail(res: &mut Response, status: StatusCode, message: String) {
    res.status_code(status);
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    res.render(message);
}

fn main() {
    let mut listen = "127.0.0.1:3001".to_owned();
    let mut upstream = "http://127.0.0.1:11435".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--listen" => listen = value,
            "--upstream" => upstream = value.trim_end_matches('/').to_owned(),
            _ => {
                eprintln!("usage: bare_proxy --listen ADDR --upstream URL");
                std::process::exit(2);
            }
        }
    }
    let addr = listen.parse().expect("--listen is an address like 127.0.0.1:3001");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let listeners = runtime()
        .block_on(diglot::http::bind(addr, cores))
        .expect("the address is free");
    let local = listeners[0].local_addr().expect("a TCP address");
    println!("listening on http://{local}");
    let workers: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let upstream = upstream.clone();
            std::thread::spawn(move || runtime().block_on(serve(listener, upstream)))
        })
        .collect();
    workers.into_iter().for_each(|worker| drop(worker.join()));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the runtime starts")
}

/// One worker: its own client, its own listener.
async fn serve(listener: std::net::TcpListener, upstream: String) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    TARGET.with(|target| drop(target.set(Target { client, upstream })));
    let listener = tokio::net::TcpListener::from_std(listener).expect("the listener registers");
    let acceptor = salvo::conn::tcp::TcpAcceptor::try_from(listener).expect("a TCP listener");
    let router = Router::new().push(Router::with_path("{**rest}").goal(forward));
    Server::new(acceptor).serve(router).await;
}
