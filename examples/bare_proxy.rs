//! The least a gateway on diglot's HTTP stack can cost: salvo in front, reqwest behind,
//! the same listener (`TCP_NODELAY`) and runtime, and nothing else. Every request is
//! forwarded to the upstream as bytes (method, path, query and body) and its answer is
//! streamed back as bytes: no JSON, no translation, no routing, no auth, no metrics.
//!
//! The benchmark measures it beside nginx and diglot, which splits diglot's added latency
//! into what the stack costs (this) and what diglot's own work costs (the rest).
//!
//! ```sh
//! cargo run --release --example bare_proxy -- --listen 127.0.0.1:3001 --upstream http://127.0.0.1:11435
//! ```

use salvo::conn::Acceptor;
use salvo::http::{HeaderValue, StatusCode};
use salvo::prelude::*;
use std::sync::OnceLock;

struct Target {
    client: reqwest::Client,
    upstream: String,
}

static TARGET: OnceLock<Target> = OnceLock::new();

#[handler]
async fn forward(req: &mut Request, res: &mut Response) {
    let target = TARGET.get().expect("set before serving");
    let body = match req.payload().await {
        Ok(body) => body.clone(),
        Err(e) => return fail(res, StatusCode::BAD_REQUEST, e.to_string()),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = target
        .client
        .request(req.method().clone(), format!("{}{path}", target.upstream))
        .body(body);
    if let Some(content_type) = req.headers().get("content-type") {
        upstream = upstream.header("content-type", content_type.clone());
    }
    match upstream.send().await {
        Ok(answer) => {
            res.status_code(answer.status());
            if let Some(content_type) = answer.headers().get("content-type") {
                res.headers_mut().insert("content-type", content_type.clone());
            }
            res.stream(answer.bytes_stream());
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

#[tokio::main]
async fn main() {
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
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("the client builds");
    let _ = TARGET.set(Target { client, upstream });
    let addr = listen.parse().expect("--listen is an address like 127.0.0.1:3001");
    let acceptor = diglot::http::bind(addr).await.expect("the address is free");
    let local = acceptor.holdings()[0].local_addr.clone();
    println!("listening on http://{}", local.into_std().expect("a TCP address"));
    let router = Router::new().push(Router::with_path("{**rest}").goal(forward));
    Server::new(acceptor).serve(router).await;
}
