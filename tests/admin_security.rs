//! Who may use the admin API (`/admin/api`, issue 19) and how: password and token
//! sessions (a strict cookie, CSRF on every change, logout), bearer tokens by role, the
//! login rate, no password set, foreign origins and `[admin] allow_ips`; errors that
//! name the field; the OpenAPI document and the docs page. The contract is
//! `notes/admin-api.md`.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;
use diglot::store::{Role, TokenRecord};
use reqwest::Method;
use serde_json::{Value, json};

/// Admin routes a GET reaches, each of which needs credentials.
const ADMIN_GETS: &[&str] = &[
    "/admin/api/session",
    "/admin/api/tokens",
    "/admin/api/channels",
    "/admin/api/models",
    "/admin/api/logs",
    "/admin/api/logs/stream",
    "/admin/api/dashboard?window=1h",
    "/admin/api/settings",
    "/admin/api/audit",
    "/admin/api/me",
    "/admin/api/me/logs",
];

async fn login(base: &str, body: Value) -> Answer {
    post(base, "/admin/api/login", body).await
}

#[tokio::test]
async fn a_password_session_is_a_strict_cookie_and_every_change_needs_its_csrf_token() {
    let gw = AdminGateway::start(|_| {}).await;
    for path in ADMIN_GETS {
        let a = send(client().get(format!("{}{path}", gw.base))).await;
        admin_error(&a, 401, None, &format!("GET {path} without credentials"));
    }
    let a = post(&gw.base, "/admin/api/tokens", json!({"name": "x"})).await;
    admin_error(&a, 401, None, "POST without credentials");
    let a = login(&gw.base, json!({"password": "not the password"})).await;
    admin_error(&a, 401, None, "a wrong password");
    assert!(
        session_cookie(&a).is_none(),
        "no session for a wrong password: {:?}",
        a.headers
    );

    let a = login(&gw.base, json!({"password": ADMIN_PASSWORD})).await;
    assert_eq!(a.status, 200, "the password signs in: {}", a.text);
    let answer = a.json();
    let csrf = answer["csrf_token"].as_str().expect("csrf_token").to_owned();
    assert_eq!(answer["role"], "admin", "{answer}");
    let in_12h = now_ms() / 1000 + 12 * 3600;
    let expires = answer["expires_at"].as_i64().expect("expires_at, unix seconds");
    assert!(
        (in_12h - 60..=in_12h + 60).contains(&expires),
        "session_hours = 12: {answer}"
    );
    let cookie = session_cookie(&a).expect("Set-Cookie: diglot_session=...");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(
            cookie_has(&cookie, attribute),
            "the session cookie has {attribute}: {cookie}"
        );
    }
    assert!(
        !cookie_has(&cookie, "Secure"),
        "not Secure without secure_cookies: {cookie}"
    );
    let admin = Admin {
        base: gw.base.clone(),
        cookie: Some(cookie.split(';').next().unwrap().to_owned()),
        csrf: Some(csrf.clone()),
        bearer: None,
    };
    let session = admin.get_ok("/admin/api/session").await;
    assert_eq!(
        (
            &session["role"],
            &session["via"],
            &session["token_prefix"],
            &session["csrf_token"]
        ),
        (&json!("admin"), &json!("password"), &Value::Null, &json!(csrf)),
        "{session}"
    );

    // Without its CSRF token, or with a wrong one, no change goes through.
    let wrong = Admin {
        csrf: Some("not-the-csrf-token".into()),
        ..admin.clone()
    };
    for (forged, how) in [
        (admin.without_csrf(), "without x-csrf-token"),
        (wrong, "with a wrong x-csrf-token"),
    ] {
        let changes = [
            (
                "POST tokens",
                forged.post("/admin/api/tokens", json!({"name": "forged"})).await,
            ),
            (
                "PATCH settings",
                forged.patch("/admin/api/settings", json!({"limits.rpm": 1})).await,
            ),
            (
                "PUT a model",
                forged
                    .put("/admin/api/models/chat-text", json!({"display_name": "X"}))
                    .await,
            ),
            ("DELETE a channel", forged.delete("/admin/api/channels/main").await),
            (
                "POST logout",
                send(forged.request(Method::POST, "/admin/api/logout")).await,
            ),
        ];
        for (what, a) in &changes {
            admin_error(a, 403, None, &format!("{what} {how}"));
        }
    }
    assert_eq!(
        data(&admin.get_ok("/admin/api/tokens").await),
        Vec::<Value>::new(),
        "nothing made"
    );
    let settings = admin.get_ok("/admin/api/settings").await;
    assert_eq!(
        settings["settings"]["limits.rpm"]["source"], "default",
        "nothing changed: {settings}"
    );
    let a = admin.post("/admin/api/tokens", json!({"name": "real"})).await;
    assert_eq!(a.status, 201, "with its CSRF token: {}", a.text);

    // Logout ends the session and clears the cookie.
    let a = send(admin.request(Method::POST, "/admin/api/logout")).await;
    assert_eq!(a.status, 204, "logout: {}", a.text);
    let cleared = session_cookie(&a).expect("logout clears the cookie");
    assert!(cookie_has(&cleared, "Max-Age=0"), "{cleared}");
    admin_error(
        &admin.get("/admin/api/session").await,
        401,
        None,
        "the session after logout",
    );
    admin_error(
        &admin.get("/admin/api/tokens").await,
        401,
        None,
        "the old cookie after logout",
    );
}

#[tokio::test]
async fn the_sixth_login_attempt_from_an_address_within_a_minute_gets_429_with_retry_after() {
    let gw = AdminGateway::start(|c| c.auth.trust_proxy = vec!["127.0.0.1".into()]).await;
    let from = |ip: &str, password: &str| {
        let request = client()
            .post(format!("{}/admin/api/login", gw.base))
            .header("x-forwarded-for", ip)
            .json(&json!({"password": password}));
        send(request)
    };
    for attempt in 1..=5 {
        let a = from("203.0.113.7", "guess").await;
        admin_error(&a, 401, None, &format!("wrong password, attempt {attempt}"));
    }
    let a = from("203.0.113.7", "guess").await;
    admin_error(&a, 429, None, "the sixth attempt within a minute");
    let retry: u64 = a
        .header("retry-after")
        .expect("a 429 says when to retry (Retry-After)")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let a = from("203.0.113.7", ADMIN_PASSWORD).await;
    admin_error(&a, 429, None, "even the right password, while the address waits");
    let a = from("203.0.113.8", ADMIN_PASSWORD).await;
    assert_eq!(a.status, 200, "another address is not held back: {}", a.text);
}

#[tokio::test]
async fn without_a_password_admin_answers_503_naming_how_to_set_one() {
    let root = "dg-profile-admin-00000000000000000000000000";
    let gw = AdminGateway::start(|c| {
        c.admin.password = String::new();
        c.tokens = vec![TokenRecord::for_secret("root", root, Role::Admin)];
    })
    .await;
    let a = login(&gw.base, json!({"password": "anything"})).await;
    let message = admin_error(&a, 503, None, "a password login with no password set");
    for how in ["diglot admin set-password", "DIGLOT_ADMIN__PASSWORD"] {
        assert!(message.contains(how), "the message names {how}: {message}");
    }
    for path in ["/admin/api/tokens", "/admin/api/session", "/admin/api/settings"] {
        let a = send(client().get(format!("{}{path}", gw.base))).await;
        let message = admin_error(&a, 503, None, &format!("GET {path} without credentials, no password"));
        assert!(message.contains("diglot admin set-password"), "{message}");
    }
    // An admin token still manages diglot, and the documents stay public.
    let tokens = Admin::bearer(&gw.base, root).get_ok("/admin/api/tokens").await;
    assert!(tokens["data"].is_array(), "{tokens}");
    let a = send(client().get(format!("{}/admin/api/openapi.json", gw.base))).await;
    assert_eq!(a.status, 200, "the OpenAPI document is public: {}", a.text);
}

#[tokio::test]
async fn admin_tokens_work_as_bearers_without_cookie_or_csrf_and_user_tokens_only_on_me() {
    let gw = AdminGateway::start(|_| {}).await;
    let admin = gw.admin().await;
    let (_, ops) = admin.create_token(json!({"name": "ops", "role": "admin"})).await;
    let (_, user) = admin.create_token(json!({"name": "user"})).await;

    let bearer = Admin::bearer(&gw.base, &ops);
    assert_eq!(data(&bearer.get_ok("/admin/api/tokens").await).len(), 2);
    let (made, _) = bearer.create_token(json!({"name": "made-by-ops"})).await;
    let path = format!("/admin/api/tokens/{}", id_of(&made));
    assert_eq!(
        bearer.patch(&path, json!({"rpm": 5})).await.status,
        200,
        "PATCH without CSRF"
    );
    let a = bearer.patch("/admin/api/settings", json!({"cache.ttl_secs": 60})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(bearer.delete(&path).await.status, 204, "DELETE without CSRF");

    let user_bearer = Admin::bearer(&gw.base, &user);
    for path in ADMIN_GETS
        .iter()
        .filter(|p| !p.starts_with("/admin/api/me") && !p.ends_with("/session"))
    {
        admin_error(
            &user_bearer.get(path).await,
            403,
            None,
            &format!("a user token on GET {path}"),
        );
    }
    let a = user_bearer.post("/admin/api/tokens", json!({"name": "mine"})).await;
    admin_error(&a, 403, None, "a user token making a token");
    let a = user_bearer.patch("/admin/api/settings", json!({"limits.rpm": 1})).await;
    admin_error(&a, 403, None, "a user token changing settings");
    assert_eq!(user_bearer.get_ok("/admin/api/me").await["name"], "user");

    let nobody = "dg-nobody-000000000000000000000000000000000";
    admin_error(
        &Admin::bearer(&gw.base, nobody).get("/admin/api/tokens").await,
        401,
        None,
        "an unknown bearer",
    );
    admin_error(
        &login(&gw.base, json!({"token": nobody})).await,
        401,
        None,
        "signing in with an unknown token",
    );

    // An admin token signs in too: a session like the password's, CSRF included.
    let session = Admin::login_token(&gw.base, &ops).await;
    let who = session.get_ok("/admin/api/session").await;
    assert_eq!(
        (&who["role"], &who["via"], &who["token_prefix"]),
        (&json!("admin"), &json!("token"), &json!(ops[..7])),
        "{who}"
    );
    let a = session
        .without_csrf()
        .post("/admin/api/tokens", json!({"name": "x"}))
        .await;
    admin_error(&a, 403, None, "a token session's change without CSRF");
    assert_eq!(
        session.post("/admin/api/tokens", json!({"name": "x"})).await.status,
        201
    );
}

#[tokio::test]
async fn the_session_cookie_is_secure_with_secure_cookies_or_https_from_a_trusted_proxy() {
    let cookie = |base: String, https: bool| async move {
        let mut request = client()
            .post(format!("{base}/admin/api/login"))
            .json(&json!({"password": ADMIN_PASSWORD}));
        if https {
            request = request.header("x-forwarded-proto", "https");
        }
        let a = send(request).await;
        assert_eq!(a.status, 200, "{}", a.text);
        session_cookie(&a).expect("Set-Cookie: diglot_session=...")
    };
    let plain = AdminGateway::start(|_| {}).await;
    let c = cookie(plain.base.clone(), true).await;
    assert!(
        !cookie_has(&c, "Secure"),
        "X-Forwarded-Proto from an untrusted peer: {c}"
    );
    let secure = AdminGateway::start(|c| c.admin.secure_cookies = true).await;
    let c = cookie(secure.base.clone(), false).await;
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie_has(&c, attribute), "secure_cookies = true: {attribute} in {c}");
    }
    let proxied = AdminGateway::start(|c| c.auth.trust_proxy = vec!["127.0.0.1".into()]).await;
    let c = cookie(proxied.base.clone(), true).await;
    assert!(cookie_has(&c, "Secure"), "HTTPS through a trusted proxy: {c}");
    let c = cookie(proxied.base.clone(), false).await;
    assert!(!cookie_has(&c, "Secure"), "plain HTTP through the proxy: {c}");
}

#[tokio::test]
async fn foreign_origins_and_addresses_outside_allow_ips_get_403() {
    let gw = AdminGateway::start(|_| {}).await;
    let admin = gw.admin().await;
    for origin in ["https://evil.example", "http://localhost:9999"] {
        let a = send(admin.request(Method::GET, "/admin/api/tokens").header("origin", origin)).await;
        admin_error(&a, 403, None, &format!("a signed-in GET from Origin {origin}"));
        let change = admin
            .request(Method::POST, "/admin/api/tokens")
            .header("origin", origin);
        let a = send(change.json(&json!({"name": "from-elsewhere"}))).await;
        admin_error(
            &a,
            403,
            None,
            &format!("a signed-in POST (with CSRF) from Origin {origin}"),
        );
        let sign_in = client()
            .post(format!("{}/admin/api/login", gw.base))
            .header("origin", origin);
        let a = send(sign_in.json(&json!({"password": ADMIN_PASSWORD}))).await;
        admin_error(&a, 403, None, &format!("a login from Origin {origin}"));
    }
    // The page's own origin (the Host's) is welcome.
    let own = admin
        .request(Method::POST, "/admin/api/tokens")
        .header("origin", &gw.base);
    let a = send(own.json(&json!({"name": "from-the-page"}))).await;
    assert_eq!(a.status, 201, "POST from Origin {}: {}", gw.base, a.text);
    let names: Vec<Value> = data(&admin.get_ok("/admin/api/tokens").await)
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("from-the-page")],
        "only the own origin's change went through"
    );

    let root = "dg-fenced-admin-000000000000000000000000000";
    let fenced = AdminGateway::start(|c| {
        c.admin.allow_ips = vec!["10.0.0.0/8".into()];
        c.tokens = vec![TokenRecord::for_secret("root", root, Role::Admin)];
    })
    .await;
    let a = login(&fenced.base, json!({"password": ADMIN_PASSWORD})).await;
    admin_error(&a, 403, None, "a login from 127.0.0.1 with allow_ips 10.0.0.0/8");
    let a = Admin::bearer(&fenced.base, root).get("/admin/api/tokens").await;
    admin_error(&a, 403, None, "an admin token from 127.0.0.1 with allow_ips 10.0.0.0/8");
    let chat = json!({"model": "chat-text", "messages": [{"role": "user", "content": "hi"}]});
    let a = call(&fenced.base, "/v1/chat/completions", Some(root), chat).await;
    assert_eq!(a.status, 200, "allow_ips fences /admin only: {}", a.text);
}

#[tokio::test]
async fn invalid_bodies_get_400_naming_the_field_and_change_nothing() {
    let gw = AdminGateway::start(|_| {}).await;
    let admin = gw.admin().await;
    let raw = admin
        .request(Method::POST, "/admin/api/tokens")
        .header("content-type", "application/json")
        .body(r#"{"name": "#);
    admin_error(&send(raw).await, 400, None, "malformed JSON");
    let tokens = "/admin/api/tokens";
    let refused = [
        (json!({"name": 5}), Some("name"), "a name that is a number"),
        (json!({"role": "user"}), Some("name"), "a token without a name"),
        (json!({"name": "x", "rpm": "fast"}), Some("rpm"), "rpm as a string"),
        (json!({"name": "x", "rpm": 0}), Some("rpm"), "rpm 0 (null clears)"),
        (
            json!({"name": "x", "ips": ["not-an-address"]}),
            Some("ips"),
            "a bad address",
        ),
        (json!({"name": "x", "role": "root"}), Some("role"), "an unknown role"),
    ];
    for (body, field, what) in refused {
        admin_error(&admin.post(tokens, body).await, 400, field, what);
    }
    let message = admin_error(
        &admin.post(tokens, json!({"name": "x", "colour": "red"})).await,
        400,
        None,
        "an unknown field",
    );
    assert!(message.contains("colour"), "names the unknown field: {message}");

    let (taken, _) = admin.create_token(json!({"name": "taken"})).await;
    admin_error(
        &admin.post(tokens, json!({"name": "taken"})).await,
        409,
        Some("name"),
        "a name taken",
    );
    let path = format!("/admin/api/tokens/{}", id_of(&taken));
    admin_error(
        &admin.patch(&path, json!({"rpm": "fast"})).await,
        400,
        Some("rpm"),
        "PATCH rpm as a string",
    );
    admin_error(
        &admin.patch(&path, json!({"colour": 1})).await,
        400,
        None,
        "PATCH an unknown field",
    );
    for (method, what) in [
        (Method::GET, "GET"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
    ] {
        let a = send(admin.request(method, "/admin/api/tokens/987654").json(&json!({}))).await;
        admin_error(&a, 404, None, &format!("{what} an unknown token id"));
    }

    let channels = "/admin/api/channels";
    let refused = [
        (
            json!({"name": "c", "url": "ftp://example.com"}),
            Some("url"),
            "a channel URL that is not http(s)",
        ),
        (
            json!({"name": "c", "url": dead_url(), "weight": "heavy"}),
            Some("weight"),
            "weight as a string",
        ),
        (
            json!({"name": "c", "url": dead_url(), "kind": "smtp"}),
            Some("kind"),
            "an unknown kind",
        ),
        (
            json!({"name": "c", "url": dead_url(), "colour": 1}),
            None,
            "an unknown channel field",
        ),
    ];
    for (body, field, what) in refused {
        admin_error(&admin.post(channels, body).await, 400, field, what);
    }
    admin_error(
        &admin.patch("/admin/api/channels/nope", json!({"weight": 2})).await,
        404,
        None,
        "PATCH an unknown channel",
    );

    let names: Vec<Value> = data(&admin.get_ok(tokens).await)
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, [json!("taken")], "no refused token was made");
    let names: Vec<Value> = data(&admin.get_ok(channels).await)
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, [json!("main")], "no refused channel was made");
    assert_eq!(
        admin.get_ok(&path).await["rpm"],
        Value::Null,
        "no refused PATCH applied"
    );
}

/// Every route of the contract, as `METHOD /path` with its parameters named.
const ROUTES: &[&str] = &[
    "POST /admin/api/login",
    "POST /admin/api/logout",
    "GET /admin/api/session",
    "GET /admin/api/tokens",
    "POST /admin/api/tokens",
    "GET /admin/api/tokens/{id}",
    "PATCH /admin/api/tokens/{id}",
    "DELETE /admin/api/tokens/{id}",
    "GET /admin/api/channels",
    "POST /admin/api/channels",
    "GET /admin/api/channels/{name}",
    "PATCH /admin/api/channels/{name}",
    "DELETE /admin/api/channels/{name}",
    "POST /admin/api/channels/{name}/test",
    "GET /admin/api/models",
    "PUT /admin/api/models/{pattern}",
    "DELETE /admin/api/models/{pattern}",
    "GET /admin/api/logs",
    "GET /admin/api/logs/stream",
    "GET /admin/api/dashboard",
    "GET /admin/api/settings",
    "PATCH /admin/api/settings",
    "GET /admin/api/me",
    "GET /admin/api/me/logs",
    "GET /admin/api/audit",
];

const VALIDATE: &str =
    "from openapi_spec_validator import validate; import json,sys; validate(json.load(open(sys.argv[1])))";

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_lists_every_admin_route_and_is_valid_openapi_3_1() {
    let gw = AdminGateway::start(|_| {}).await;
    let a = send(client().get(format!("{}/admin/api/openapi.json", gw.base))).await;
    assert_eq!(a.status, 200, "public, without credentials: {}", a.text);
    let doc = a.json();
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "OpenAPI 3.1, not {:?}", doc["openapi"]);
    // Paths may sit under a relative server URL ("/admin/api").
    let prefix = doc["servers"][0]["url"]
        .as_str()
        .filter(|u| u.starts_with('/'))
        .unwrap_or("");
    let mut listed = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                let full = format!("{}{path}", prefix.trim_end_matches('/'));
                listed.insert(format!("{} {full}", method.to_uppercase()));
            }
        }
    }
    let missing: Vec<&&str> = ROUTES.iter().filter(|r| !listed.contains(**r)).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}\nlisted: {listed:#?}"
    );

    let dir = temp_dir();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &a.text).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(venv_python());
        command.args(["-c", VALIDATE]).arg(&file);
        run_to_end(command)
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator rejects /admin/api/openapi.json:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `src` of each `<script>` and `href` of each `<link>` in `html`.
fn asset_urls(html: &str) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for (tag, attribute) in [("script", "src="), ("link", "href=")] {
        for (at, _) in html.match_indices(&format!("<{tag}")) {
            let element = &html[at..at + html[at..].find('>').unwrap_or(html.len() - at)];
            let Some(start) = element.find(attribute) else { continue };
            let rest = &element[start + attribute.len()..];
            let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'');
            let value = match quote {
                Some(q) => rest[1..].split(q).next().unwrap_or_default(),
                None => rest.split(|c: char| c.is_whitespace()).next().unwrap_or_default(),
            };
            found.push((tag, value.to_owned()));
        }
    }
    found
}

#[tokio::test]
async fn the_docs_page_loads_only_assets_diglot_serves_itself() {
    let gw = AdminGateway::start(|_| {}).await;
    let res = client().get(format!("{}/admin/docs", gw.base)).send().await.unwrap();
    let (status, page) = (res.status(), res.url().clone());
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let html = res.text().await.unwrap();
    assert_eq!(status, 200, "GET /admin/docs (public): {html}");
    assert!(
        content_type.as_deref().is_some_and(|t| t.starts_with("text/html")),
        "{content_type:?}"
    );
    let assets = asset_urls(&html);
    assert!(
        assets.iter().any(|(tag, _)| *tag == "script"),
        "Swagger UI's script: {html}"
    );
    for (tag, url) in assets.iter().filter(|(_, url)| !url.starts_with("data:")) {
        let elsewhere = ["http:", "https:", "//"].iter().any(|s| url.starts_with(s));
        assert!(!elsewhere, "<{tag}> loads {url} from another host");
        let asset = page.join(url).unwrap();
        let status = client().get(asset.clone()).send().await.unwrap().status();
        assert_eq!(status, 200, "the embedded asset {asset} of <{tag}>");
    }
    for cdn in ["unpkg.com", "jsdelivr", "cdnjs", "googleapis"] {
        assert!(!html.contains(cdn), "the page refers to {cdn}: {html}");
    }
}
