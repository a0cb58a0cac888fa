//! Browser clients: CORS preflights and headers for allowed origins on every route (and
//! under the base path), and what a web page may not do: call from a foreign origin,
//! reach diglot through a foreign `Host` (DNS rebinding), or POST a body that is not
//! JSON without a preflight (the defenses Ollama adopted for CVE-2024-28224).

mod common;

use common::*;
use diglot::config::{Role, TokenRecord};
use serde_json::{Value, json};

const PAGE: &str = "http://localhost:5173";
const FOREIGN: &str = "https://evil.example";

/// A preflight for `method` on `url` from `origin`, asking for `headers`.
async fn preflight(url: &str, origin: &str, method: &str, headers: &str) -> Answer {
    send(
        client()
            .request(reqwest::Method::OPTIONS, url)
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers),
    )
    .await
}

fn chat_body(stream: bool) -> Value {
    json!({"model": "chat-text", "messages": user("hi"), "stream": stream})
}

/// What the SDKs send from a browser: openai-node (`x-stainless-*`, `openai-*`), the
/// Anthropic SDK (`anthropic-*`, `x-api-key`), Azure-style `api-key`.
const SDK_HEADERS: &str = "authorization, content-type, x-stainless-os, x-stainless-retry-count, \
     openai-organization, anthropic-version, anthropic-dangerous-direct-browser-access, x-api-key, api-key, x-evil";

#[tokio::test]
async fn preflights_are_answered_on_every_api_route_and_under_the_base_path() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| c.base_path = "/ollama".into()).await;
    let routes = [
        ("/v1/chat/completions", "POST"),
        ("/chat/completions", "POST"),
        ("/v1/completions", "POST"),
        ("/v1/embeddings", "POST"),
        ("/v1/models", "GET"),
        ("/v1/models/chat-text", "GET"),
        ("/api/chat", "POST"),
        ("/api/generate", "POST"),
        ("/api/embed", "POST"),
        ("/api/tags", "GET"),
        ("/api/show", "POST"),
        ("/api/pull", "POST"),
        ("/api/delete", "DELETE"),
        ("/api/version", "GET"),
        ("/ollama/v1/chat/completions", "POST"),
        ("/ollama/api/chat", "POST"),
        ("/health", "GET"),
    ];
    for (path, method) in routes {
        let answer = preflight(&format!("{base}{path}"), PAGE, method, SDK_HEADERS).await;
        assert_eq!(answer.status, 204, "{path}: {}", answer.text);
        assert_eq!(answer.header("access-control-allow-origin"), Some(PAGE), "{path}");
        assert_eq!(
            answer.header("access-control-allow-credentials"),
            Some("true"),
            "{path}"
        );
        assert_eq!(answer.header("vary"), Some("Origin"), "{path}");
        let methods = answer.header("access-control-allow-methods").unwrap_or_default();
        assert!(methods.split(", ").any(|m| m == method), "{path}: {methods}");
        let allowed = answer.header("access-control-allow-headers").unwrap_or_default();
        assert_eq!(
            allowed,
            "authorization, content-type, x-stainless-os, x-stainless-retry-count, openai-organization, \
             anthropic-version, anthropic-dangerous-direct-browser-access, x-api-key, api-key",
            "{path}: every SDK header, nothing else"
        );
        assert!(answer.header("access-control-max-age").is_some(), "{path}");
    }
    assert!(fake.received().is_empty(), "a preflight never reaches the upstream");
    // A path that is no route is not answered as one.
    let answer = preflight(&format!("{base}/wp-admin"), PAGE, "POST", "").await;
    assert_eq!(answer.status, 404);
}

#[tokio::test]
async fn an_allowed_page_streams_and_reads_the_exposed_headers() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| c.limits.rpm = 100).await;
    let answer = send(
        client()
            .post(format!("{base}/v1/chat/completions"))
            .header("origin", PAGE)
            .json(&chat_body(true)),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.header("access-control-allow-origin"), Some(PAGE));
    let exposed = answer.header("access-control-expose-headers").unwrap();
    for name in [
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-tokens",
        "retry-after",
        "x-diglot-cache",
        "x-request-id",
    ] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }
    let chunks = sse_chunks(&answer.text);
    assert!(chunks.len() > 2, "a real stream: {}", answer.text);

    // Errors from later checks carry the headers too, so the page can read them.
    let answer = send(
        client()
            .post(format!("{base}/v1/chat/completions"))
            .header("origin", "vscode-webview://1abc")
            .json(&json!({"model": "no-such-model", "messages": user("hi")})),
    )
    .await;
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("vscode-webview://1abc")
    );
}

#[tokio::test]
async fn a_foreign_origin_is_refused_in_the_callers_protocol_before_the_upstream() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |_| {}).await;
    let post = |path: &str, body: Value| {
        send(
            client()
                .post(format!("{base}{path}"))
                .header("origin", FOREIGN)
                .json(&body),
        )
    };
    let (status, body) = post("/v1/chat/completions", chat_body(false)).await.status_json();
    assert_eq!(status, 403);
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[cors] allow_origins"),
        "{body}"
    );
    let answer = post("/api/chat", chat_body(false)).await;
    assert_eq!(answer.status, 403);
    assert!(answer.json()["error"].as_str().unwrap().contains(FOREIGN));
    assert!(answer.header("access-control-allow-origin").is_none());
    // Model management, which Ollama itself guards by Origin, is never forwarded.
    for path in ["/api/pull", "/api/copy", "/api/create", "/api/push"] {
        let answer = post(path, json!({"model": "x", "source": "a", "destination": "b"})).await;
        assert_eq!(answer.status, 403, "{path}");
    }
    let answer = preflight(&format!("{base}/v1/chat/completions"), FOREIGN, "POST", "authorization").await;
    assert_eq!(answer.status, 403);
    assert!(answer.header("access-control-allow-origin").is_none());
    assert!(fake.received().is_empty(), "{:?}", fake.received().len());
}

#[tokio::test]
async fn listed_origins_and_the_star() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| {
        c.cors.allow_origins = vec!["https://*.chat.example".into(), "chrome-extension://*".into()]
    })
    .await;
    for origin in [
        "https://lobe.chat.example",
        "chrome-extension://jfgfiigpkhlkbnfnbobbkinehhfdhndo",
    ] {
        let answer = preflight(&format!("{base}/api/chat"), origin, "POST", "content-type").await;
        assert_eq!(answer.status, 204, "{origin}");
        assert_eq!(answer.header("access-control-allow-origin"), Some(origin));
    }
    let answer = preflight(&format!("{base}/api/chat"), "https://chat.example.evil", "POST", "").await;
    assert_eq!(answer.status, 403);

    let star = diglot(&fake.url(), |c| c.cors.allow_origins = vec!["*".into()]).await;
    let answer = preflight(&format!("{star}/api/chat"), FOREIGN, "POST", "content-type").await;
    assert_eq!(answer.status, 204);
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        answer.header("access-control-allow-credentials"),
        None,
        "never credentials with *"
    );
    // A default origin is still answered as itself.
    let answer = preflight(&format!("{star}/api/chat"), PAGE, "POST", "").await;
    assert_eq!(answer.header("access-control-allow-origin"), Some(PAGE));
}

#[tokio::test]
async fn diglots_own_pages_may_call_v1_by_any_name_it_answers_to() {
    // The admin UI's playground calls /v1 from the page diglot served, under whatever name
    // diglot is reached by: its own origin is allowed without a [cors] entry.
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| c.server.allowed_hosts = vec!["gateway.example".into()]).await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let chat = |host: String, origin: String| {
        send(
            client()
                .post(format!("{base}/v1/chat/completions"))
                .header("host", host)
                .header("origin", origin)
                .json(&chat_body(false)),
        )
    };
    let own = format!("http://gateway.example:{port}");
    let answer = chat(format!("gateway.example:{port}"), own.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.header("access-control-allow-origin"), Some(own.as_str()));
    // Another port of the same name is another origin.
    let answer = chat(format!("gateway.example:{port}"), "http://gateway.example:9".into()).await;
    assert_eq!(answer.status, 403, "{}", answer.text);
    // A rebinding page is of its own origin too, and its Host is refused on loopback.
    let answer = chat(
        format!("rebind.evil.example:{port}"),
        format!("http://rebind.evil.example:{port}"),
    )
    .await;
    assert_eq!(answer.status, 403, "{}", answer.text);
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn beyond_loopback_an_own_origin_passes_only_where_rebinding_cannot_forge_it() {
    // Listening on every address with no token required, a page of a rebinding name is
    // "same origin" too: it must not pass for one of diglot's own pages. An address, or a
    // name listed in [server] allowed_hosts, is no DNS name an attacker controls.
    let fake = FakeUpstream::start().await;
    let chat = |base: String, host: String, token: Option<&'static str>| {
        let mut request = client()
            .post(format!("{base}/v1/chat/completions"))
            .header("host", &host)
            .header("origin", format!("http://{host}"))
            .json(&chat_body(false));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        send(request)
    };
    let base = diglot(&fake.url(), |c| {
        c.listen = "0.0.0.0:0".into();
        c.auth.mode = diglot::config::AuthMode::None;
        c.server.allowed_hosts = vec!["gateway.example".into()];
    })
    .await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let a = chat(base.clone(), format!("rebind.evil.example:{port}"), None).await;
    assert_eq!(a.status, 403, "{}", a.text);
    let a = chat(base.clone(), format!("10.1.2.3:{port}"), None).await;
    assert_eq!(
        (a.status, a.header("access-control-allow-origin")),
        (200, Some(format!("http://10.1.2.3:{port}").as_str())),
        "{}",
        a.text
    );
    let a = chat(base.clone(), format!("gateway.example:{port}"), None).await;
    assert_eq!(a.status, 200, "{}", a.text);

    // With tokens required, the name does not matter: a rebinding page has no token.
    let secret = "dg-beyond-loopback-000000000000000000000000000";
    let base = diglot(&fake.url(), |c| {
        c.listen = "0.0.0.0:0".into();
        c.tokens = vec![TokenRecord::for_secret("t", secret, Role::User)];
    })
    .await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let a = chat(base.clone(), format!("any.name.example:{port}"), Some(secret)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = chat(base.clone(), format!("any.name.example:{port}"), None).await;
    assert_eq!(a.status, 401, "{}", a.text);
    assert_eq!(fake.calls(), 3);
}

#[tokio::test]
async fn a_foreign_host_is_refused_on_loopback_unless_listed() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| c.server.allowed_hosts = vec!["gateway.example".into()]).await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let with_host = |host: String| send(client().get(format!("{base}/api/tags")).header("host", host));
    // A DNS-rebinding page reaches 127.0.0.1 with its own name in Host.
    let answer = with_host(format!("rebind.evil.example:{port}")).await;
    assert_eq!(answer.status, 403);
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("[server] allowed_hosts"),
        "{}",
        answer.text
    );
    let (status, body) = send(
        client()
            .post(format!("{base}/v1/chat/completions"))
            .header("host", "rebind.evil.example")
            .json(&chat_body(false)),
    )
    .await
    .status_json();
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (403, Some("permission_error"))
    );
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("app.localhost:{port}"),
        format!("gateway.example:{port}"),
        "host.docker.internal".to_owned(),
    ] {
        assert_eq!(with_host(host.clone()).await.status, 200, "{host}");
    }
    assert_eq!(fake.calls(), 0);

    // Listening on every interface, other machines use whatever name they know it by
    // (tokens are required there).
    let secret = "dg-cors-host-test-token";
    let everywhere = diglot(&fake.url(), |c| {
        c.listen = "0.0.0.0:0".into();
        c.tokens = vec![TokenRecord::for_secret("t", secret, Role::User)];
    })
    .await
    .replace("0.0.0.0", "127.0.0.1");
    let answer = send(
        client()
            .get(format!("{everywhere}/api/tags"))
            .header("host", "gpu-box.example:3000")
            .bearer_auth(secret),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn a_browser_must_send_json_and_curl_keeps_working() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |_| {}).await;
    let body = serde_json::to_string(&chat_body(false)).unwrap();
    let typed = |path: &str, content_type: Option<&str>, origin: Option<&str>| {
        let mut request = client().post(format!("{base}{path}")).body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        send(request)
    };
    // The no-preflight requests a page may send: text/plain, a form, no type at all.
    for content_type in [
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let (status, error) = typed("/v1/chat/completions", content_type, Some(PAGE))
            .await
            .status_json();
        assert_eq!(status, 415, "{content_type:?}");
        assert_eq!(error["error"]["code"], "unsupported_media_type");
        assert!(error["error"]["message"].as_str().unwrap().contains("application/json"));
        let answer = typed("/api/chat", content_type, Some(PAGE)).await;
        assert_eq!(answer.status, 415, "{content_type:?}");
        assert!(answer.json()["error"].as_str().unwrap().contains("application/json"));
    }
    assert_eq!(fake.calls(), 0, "refused before any upstream call");

    for content_type in ["application/json", "application/json; charset=utf-8"] {
        let answer = typed("/api/chat", Some(content_type), Some(PAGE)).await;
        assert_eq!(answer.status, 200, "{content_type}: {}", answer.text);
    }
    // `curl -d` (a form type) and no type at all, without Origin: command lines and SDKs.
    for content_type in [Some("application/x-www-form-urlencoded"), None] {
        let answer = typed("/api/chat", content_type, None).await;
        assert_eq!(answer.status, 200, "{content_type:?}: {}", answer.text);
    }
    let answer = typed("/v1/chat/completions", Some("application/xml"), None).await;
    assert_eq!(answer.status, 415);
}
