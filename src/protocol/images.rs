//! Images between protocols: `data:` URIs, MIME sniffing, and fetching http(s) URLs for
//! upstreams that only take bytes — without letting the gateway reach internal hosts.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::ImageConfig;
use crate::ir::{Error, Image};
use crate::protocol::upstream::root_cause;

/// Reads an image reference as a client gave it: a `data:` URI or an http(s) URL.
pub fn parse_image_ref(url: &str) -> Result<Image, Error> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| Error::bad_request("image data URI has no ',' before its data"))?;
        let Some(mime) = meta.strip_suffix(";base64") else {
            return Err(Error::bad_request(
                "image data URIs must be base64-encoded (data:image/png;base64,...)",
            ));
        };
        let mime = (!mime.is_empty()).then(|| mime.to_owned());
        if let Some(m) = &mime
            && !m.starts_with("image/")
        {
            return Err(Error::bad_request(format!("data URI of type '{m}' is not an image")));
        }
        return Ok(Image::Data {
            mime,
            base64: data.to_owned(),
        });
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(Image::Url(url.to_owned()));
    }
    Err(Error::bad_request("image_url must be a data: URI or an http(s) URL"))
}

/// The MIME type of image bytes, read from their magic numbers.
pub fn sniff_mime(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [0x89, b'P', b'N', b'G', ..] => Some("image/png"),
        [0xFF, 0xD8, 0xFF, ..] => Some("image/jpeg"),
        [b'G', b'I', b'F', b'8', ..] => Some("image/gif"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some("image/webp"),
        [b'B', b'M', ..] => Some("image/bmp"),
        _ => None,
    }
}

/// The MIME type of base64 image data, decoding only its first bytes.
pub fn sniff_base64_mime(base64: &str) -> Option<&'static str> {
    // Bytes, not a str slice: client text may put a multi-byte character at the cut.
    let head = &base64.as_bytes()[..base64.len().min(24)];
    let bytes = STANDARD.decode(head).ok()?;
    sniff_mime(&bytes)
}

/// Fetches image URLs with a size and time limit.
#[derive(Clone)]
pub struct ImageFetcher {
    /// Built on the first fetch and shared by clones: building one loads and parses the
    /// system's root certificates (a file per authority), which a gateway whose clients
    /// never send image URLs should not pay for at every start and channel change.
    http: Arc<OnceLock<reqwest::Client>>,
    config: ImageConfig,
}

impl ImageFetcher {
    pub fn new(config: &ImageConfig) -> Self {
        Self {
            http: Arc::default(),
            config: config.clone(),
        }
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            let allow_private = self.config.allow_private;
            let mut builder =
                reqwest::Client::builder()
                    .timeout(self.config.timeout())
                    .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                        let refused = host_ip(attempt.url()).is_some_and(|ip| !allow_private && is_internal(ip));
                        if refused {
                            attempt.error("redirect to an internal address")
                        } else if attempt.previous().len() >= 5 {
                            attempt.error("too many redirects")
                        } else {
                            attempt.follow()
                        }
                    }));
            if !allow_private {
                // Names are checked at connection time too, so DNS rebinding cannot slip past.
                builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
            }
            builder
                .build()
                .expect("the image HTTP client builds with static settings")
        })
    }

    /// Downloads `url` and returns its bytes base64-encoded, with their MIME type.
    pub async fn fetch(&self, url: &str) -> Result<(String, &'static str), Error> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| Error::bad_request(format!("image URL '{url}' is invalid: {e}")))?;
        if !self.config.allow_private {
            self.refuse_internal(&parsed).await?;
        }
        let failed = |e: reqwest::Error| {
            let why = if e.is_timeout() {
                "it took too long".to_string()
            } else {
                root_cause(&e)
            };
            Error::bad_request(format!("image URL '{url}' could not be fetched: {why}"))
        };
        let response = self.http().get(parsed).send().await.map_err(failed)?;
        if !response.status().is_success() {
            return Err(Error::bad_request(format!(
                "image URL '{url}' answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let limit = self.config.max_bytes;
        let too_big = || Error::bad_request(format!("image at '{url}' is larger than the {limit}-byte limit"));
        if response.content_length().is_some_and(|n| n as usize > limit) {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(failed)?;
            if bytes.len() + chunk.len() > limit {
                return Err(too_big());
            }
            bytes.extend_from_slice(&chunk);
        }
        let mime = sniff_mime(&bytes)
            .ok_or_else(|| Error::bad_request(format!("'{url}' is not a PNG, JPEG, GIF, WebP or BMP image")))?;
        Ok((STANDARD.encode(&bytes), mime))
    }

    async fn refuse_internal(&self, url: &reqwest::Url) -> Result<(), Error> {
        let refused = || {
            Error::bad_request(format!(
                "image URL '{url}' points to a loopback, private or link-local address, which this gateway does not fetch \
                 (set images.allow_private to allow it)"
            ))
        };
        if let Some(ip) = host_ip(url) {
            return if is_internal(ip) { Err(refused()) } else { Ok(()) };
        }
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Error::bad_request(format!("image URL '{url}': cannot resolve '{host}': {e}")))?;
        for addr in addrs {
            if is_internal(addr.ip()) {
                return Err(refused());
            }
        }
        Ok(())
    }
}

fn host_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// Loopback, private, link-local, unspecified, CGNAT and unique-local addresses.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xC0) == 64)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal(IpAddr::V4(v4)),
            None => v6.is_loopback() || v6.is_unspecified() || v6.is_unique_local() || v6.is_unicast_link_local(),
        },
    }
}

/// A resolver that answers only with public addresses.
struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("'{}' resolves only to internal addresses", name.as_str()).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_text_with_a_multibyte_character_at_the_cut_does_not_panic() {
        // Found by fuzz/image_uri: '®' spans bytes 23..25 of the data.
        let uri = "data:;base64,/9Q%Sj/n4A\u{ae}SkZJLg";
        let Ok(Image::Data { base64, .. }) = parse_image_ref(uri) else {
            panic!("a data URI")
        };
        assert_eq!(sniff_base64_mime(&base64), None);
        // What follows the first 24 bytes is not read.
        assert_eq!(sniff_base64_mime("/9j/4AAQSkZJRgABAQAAAQAB®"), Some("image/jpeg"));
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn data_uris_parse_and_sniff() {
        let png = STANDARD.encode([0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0]);
        let image = parse_image_ref(&format!("data:image/png;base64,{png}")).unwrap();
        assert_eq!(
            image,
            Image::Data {
                mime: Some("image/png".into()),
                base64: png.clone()
            }
        );
        assert_eq!(sniff_base64_mime(&png), Some("image/png"));
        assert!(parse_image_ref("data:text/plain;base64,aGk=").is_err());
        assert!(parse_image_ref("ftp://x/y.png").is_err());
    }

    /// A server on loopback answering every request with `response` (raw HTTP/1.1, one
    /// byte per char).
    async fn serve_raw(response: String) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    // Latin-1: each char one byte, so a body may hold any byte below 0x100.
                    let bytes: Vec<u8> = response.chars().map(|c| c as u8).collect();
                    let _ = stream.write_all(&bytes).await;
                });
            }
        });
        addr
    }

    fn png_response() -> String {
        // Only the magic number, which is what is sniffed; it is ASCII but for its first
        // byte, so the body is sent as Latin-1 below.
        "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 8\r\nconnection: close\r\n\r\n\u{89}PNG\r\n\u{1a}\n"
            .to_owned()
    }

    /// A redirect from a URL that passed the check to an internal one is refused: by
    /// address (the redirect policy), or by name (the resolver the connection uses).
    /// The first hop goes through the fetcher's client directly, as it would for a
    /// public host that passed `refuse_internal`.
    #[tokio::test]
    async fn a_redirect_to_an_internal_address_is_refused() {
        let fetcher = ImageFetcher::new(&ImageConfig::default());
        let target = serve_raw(png_response()).await;
        for location in [
            format!("http://127.0.0.1:{}/red.png", target.port()),
            format!("http://localhost:{}/red.png", target.port()),
            "http://169.254.169.254/latest/meta-data".to_owned(),
        ] {
            let origin = serve_raw(format!(
                "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            ))
            .await;
            let error = fetcher
                .http()
                .get(format!("http://{origin}/image"))
                .send()
                .await
                .expect_err(&location);
            let why = format!("{error:?}");
            assert!(
                why.contains("redirect to an internal address") || why.contains("resolves only to internal addresses"),
                "{location}: {why}"
            );
        }
        // The same redirect is followed when private addresses are allowed.
        let open = ImageFetcher::new(&ImageConfig {
            allow_private: true,
            ..Default::default()
        });
        let origin = serve_raw(format!(
            "HTTP/1.1 302 Found\r\nlocation: http://localhost:{}/red.png\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            target.port()
        ))
        .await;
        let (_, mime) = open.fetch(&format!("http://{origin}/image")).await.unwrap();
        assert_eq!(mime, "image/png");
    }

    /// The check before a fetch and the connection resolve a name separately, so a name
    /// that answers a public address to the first and an internal one to the second (DNS
    /// rebinding) must still not be connected to: the connection checks the addresses it
    /// connects to itself. Here a server listens on loopback, and the fetcher's client
    /// (without the check before) still refuses to reach it by name.
    #[tokio::test]
    async fn the_connection_checks_the_addresses_it_connects_to() {
        let server = serve_raw(png_response()).await;
        let url = format!("http://localhost:{}/red.png", server.port());
        let fetcher = ImageFetcher::new(&ImageConfig::default());
        let error = fetcher.http().get(&url).send().await.expect_err("refused");
        assert!(
            format!("{error:?}").contains("'localhost' resolves only to internal addresses"),
            "{error:?}"
        );
        // The server was there: with private addresses allowed, the same URL is fetched.
        let open = ImageFetcher::new(&ImageConfig {
            allow_private: true,
            ..Default::default()
        });
        assert_eq!(open.http().get(&url).send().await.unwrap().status(), 200);
    }
}
