//! The admin web UI at `/admin`: the files `src/admin/ui/build.sh` built into
//! `src/admin/ui/dist` (committed, so building diglot needs no Node), embedded in the
//! binary with their gzip and brotli copies. Content-hashed assets are cached for a year;
//! `index.html` is revalidated (ETag) on every load. Every other path under `/admin` that
//! is neither the API nor the reference is a page of the UI, answered with `index.html`.

use salvo::http::StatusCode;
use salvo::http::header::{self, HeaderValue};
use salvo::prelude::*;

use super::error::{self, ApiError};

/// One built file.
struct Asset {
    /// Under `/admin/`.
    path: &'static str,
    content_type: &'static str,
    /// The name carries a hash of the content (`assets/index-ZJwalNeP.js`).
    hashed: bool,
    /// A quoted hash of `raw`.
    etag: &'static str,
    raw: &'static [u8],
    gzip: Option<&'static [u8]>,
    brotli: Option<&'static [u8]>,
}

static ASSETS: &[Asset] = include!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/admin/ui/dist/files.rs"));

/// What the UI's pages may load and call: their own origin only. uPlot sizes its charts
/// with style attributes, hence `'unsafe-inline'` for styles (never for scripts).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The encodings `accept` (an `Accept-Encoding` value) takes, by name, with a weight
/// above zero.
fn accepts(accept: &str, encoding: &str) -> bool {
    accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        name.eq_ignore_ascii_case(encoding) && !refused
    })
}

/// `/admin` and everything under it that the API and the reference do not serve.
#[handler]
pub async fn serve(req: &mut Request, res: &mut Response) {
    let path = req
        .uri()
        .path()
        .strip_prefix("/admin")
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    let is_read = matches!(*req.method(), salvo::http::Method::GET | salvo::http::Method::HEAD);
    // The API's unknown routes stay JSON errors, and so does anything but a read.
    if !is_read || path == "api" || path.starts_with("api/") {
        let message = format!("no admin route {} {}", req.method(), req.uri().path());
        return error::write(res, &ApiError::not_found(message));
    }
    let asset = match find(&path) {
        Some(asset) => asset,
        // A missing asset is a 404, not the page: a stale page asking for an old bundle
        // must not get HTML as script.
        None if path.starts_with("assets/") => {
            res.status_code(StatusCode::NOT_FOUND);
            return res.render(Text::Plain("no such file: rebuild or reload the page"));
        }
        None => find("index.html").expect("the UI build has an index.html"),
    };
    write(req, res, asset);
}

fn write(req: &Request, res: &mut Response, asset: &'static Asset) {
    let headers = res.headers_mut();
    let set = |headers: &mut salvo::http::HeaderMap, name: header::HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_TYPE, asset.content_type);
    set(headers, header::ETAG, asset.etag);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(
        headers,
        header::CACHE_CONTROL,
        if asset.hashed {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        },
    );
    if asset.content_type.starts_with("text/html") {
        set(headers, header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
        set(headers, header::REFERRER_POLICY, "same-origin");
    }
    if asset.gzip.is_some() || asset.brotli.is_some() {
        set(headers, header::VARY, "accept-encoding");
    }
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == asset.etag || t.trim() == "*"));
    if unchanged {
        res.status_code(StatusCode::NOT_MODIFIED);
        return;
    }
    let accept = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (body, encoding) = match (asset.brotli, asset.gzip) {
        (Some(br), _) if accepts(accept, "br") => (br, Some("br")),
        (_, Some(gz)) if accepts(accept, "gzip") => (gz, Some("gzip")),
        _ => (asset.raw, None),
    };
    if let Some(encoding) = encoding {
        set(res.headers_mut(), header::CONTENT_ENCODING, encoding);
    }
    res.status_code(StatusCode::OK);
    let _ = res.write_body(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_taken_by_name_unless_refused() {
        assert!(accepts("gzip, deflate, br, zstd", "br"));
        assert!(accepts("gzip;q=0.8, BR;q=1", "br"));
        assert!(!accepts("gzip, br;q=0", "br"));
        assert!(!accepts("", "gzip"));
        assert!(!accepts("x-gzip", "gzip"));
    }

    #[test]
    fn the_build_has_a_page_and_hashed_assets_only_under_assets() {
        assert!(find("index.html").is_some_and(|a| !a.hashed));
        assert!(
            ASSETS
                .iter()
                .filter(|a| a.hashed)
                .all(|a| a.path.starts_with("assets/"))
        );
        assert!(ASSETS.iter().any(|a| a.path.ends_with(".js") && a.hashed));
        for asset in ASSETS {
            assert!(
                asset.etag.starts_with('"') && asset.etag.ends_with('"'),
                "{}",
                asset.path
            );
        }
    }
}
