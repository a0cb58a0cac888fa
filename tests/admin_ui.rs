//! The admin web UI as the binary serves it (issue 20): `/admin` and every page route
//! answer `index.html` (revalidated, with a content security policy), its assets are
//! content-hashed and cached for a year, compressed copies go to clients that take them,
//! and the API's own paths stay JSON. What the pages do is `tests/browser/admin.sh`'s.

mod common;

use common::*;

async fn get(base: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = client().get(format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request).await
}

fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The page's own script and stylesheet paths (`/admin/assets/...`).
fn assets(html: &str) -> Vec<String> {
    html.split(['"', '\''])
        .filter(|part| part.starts_with("/admin/assets/"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn admin_and_its_page_routes_answer_the_ui_and_the_api_stays_json() {
    let gw = AdminGateway::start(|_| {}).await;
    let page = get(&gw.base, "/admin", &[]).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(header(&page, "content-type").is_some_and(|t| t.starts_with("text/html")));
    assert_eq!(header(&page, "cache-control"), Some("no-cache"));
    let policy = header(&page, "content-security-policy").unwrap_or_default();
    for directive in ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(page.text.contains("<div id=\"app\">"), "{}", page.text);
    let scripts = assets(&page.text);
    assert!(scripts.iter().any(|a| a.ends_with(".js")), "{}", page.text);
    for elsewhere in ["http://", "https://", "//fonts"] {
        assert!(
            !page.text.contains(elsewhere),
            "loads nothing from elsewhere: {}",
            page.text
        );
    }

    // Every page of the UI is the same document, the router picks the page.
    for route in [
        "/admin/",
        "/admin/tokens",
        "/admin/logs",
        "/admin/playground",
        "/admin/me/anything",
    ] {
        let a = get(&gw.base, route, &[]).await;
        assert_eq!((a.status, &a.text), (200, &page.text), "{route}");
    }
    // The API's unknown routes, and anything but a read, stay JSON errors.
    for (method, path) in [
        ("GET", "/admin/api/nope"),
        ("POST", "/admin/tokens"),
        ("DELETE", "/admin/"),
    ] {
        let a = send(client().request(method.parse().unwrap(), format!("{}{path}", gw.base))).await;
        assert_eq!(a.status, 404, "{method} {path}: {}", a.text);
        assert!(a.json()["error"]["message"].is_string(), "{method} {path}: {}", a.text);
    }
    // The reference is still where it was.
    assert_eq!(get(&gw.base, "/admin/docs/", &[]).await.status, 200);
    // A missing asset is a 404, never the page (a stale page must not get HTML as script).
    let a = get(&gw.base, "/admin/assets/index-gone.js", &[]).await;
    assert_eq!(a.status, 404, "{}", a.text);
}

#[tokio::test]
async fn assets_are_immutable_compressed_when_accepted_and_revalidated_by_etag() {
    let gw = AdminGateway::start(|_| {}).await;
    let page = get(&gw.base, "/admin/", &[]).await;
    let script = assets(&page.text)
        .into_iter()
        .find(|a| a.ends_with(".js"))
        .expect("the page's script");

    let plain = get(&gw.base, &script, &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(header(&plain, "content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(
        header(&plain, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(header(&plain, "content-encoding"), None, "none asked for");
    assert_eq!(header(&plain, "vary"), Some("accept-encoding"));

    for (accept, expected) in [
        ("gzip, deflate, br, zstd", "br"),
        ("gzip", "gzip"),
        ("br;q=0, gzip", "gzip"),
    ] {
        let res = client()
            .get(format!("{}{script}", gw.base))
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let encoding = res
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(encoding.as_deref(), Some(expected), "Accept-Encoding: {accept}");
        let body = res.bytes().await.unwrap();
        assert!(
            body.len() < plain.text.len() / 2,
            "{expected}: {} of {} bytes",
            body.len(),
            plain.text.len()
        );
        if expected == "gzip" {
            assert_eq!(&body[..2], &[0x1f, 0x8b], "a gzip stream");
        }
    }

    // index.html: revalidated with its ETag, 304 when unchanged.
    let etag = header(&page, "etag").expect("an ETag").to_owned();
    let again = get(&gw.base, "/admin/", &[("if-none-match", &etag)]).await;
    assert_eq!((again.status, again.text.as_str()), (304, ""));
    let other = get(&gw.base, "/admin/", &[("if-none-match", "\"something-else\"")]).await;
    assert_eq!(other.status, 200);
}

#[tokio::test]
async fn the_ui_is_fenced_like_the_api() {
    let gw = AdminGateway::start(|c| c.admin.allow_ips = vec!["10.9.9.9/32".into()]).await;
    let a = get(&gw.base, "/admin/", &[]).await;
    assert_eq!(a.status, 403, "outside [admin] allow_ips: {}", a.text);
    let off = AdminGateway::start(|c| c.admin.enabled = false).await;
    assert_eq!(get(&off.base, "/admin/tokens", &[]).await.status, 404);
}
