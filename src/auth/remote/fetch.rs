//! Fetching the key set over HTTPS: only the configured URL (or the `jwks_uri` that the
//! configured issuer's discovery document names) is ever requested, redirects are not
//! followed, and every response is bounded in time and size. Nothing a token says
//! (`jku`, `x5u`, `jwk`, `iss`) reaches this module.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{ACCEPT, CACHE_CONTROL, HeaderMap};
use reqwest::{StatusCode, Url};

use crate::auth::keys::AuthSetupError;
use crate::config::{RemoteKeySource, RemoteLocation};

/// Largest discovery or JWKS document read; real ones are a few KiB.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// A fetched JWKS document.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// The body.
    pub body: Vec<u8>,
    /// `Cache-Control: max-age` of the response.
    pub max_age: Option<Duration>,
}

/// Why a fetch failed (counted toward the breaker). The text names URLs and statuses only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FetchError {
    /// No answer in time.
    #[error("{url}: no answer within {ms} ms")]
    Timeout { url: String, ms: u128 },
    /// Connection, TLS or protocol failure.
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    /// A status other than 200 (redirects included: they are not followed).
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    /// Over [`MAX_DOCUMENT_BYTES`].
    #[error("{url}: the document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    /// Not the JSON document expected.
    #[error("{url}: {reason}")]
    Document { url: String, reason: String },
}

/// The HTTP side of a remote key source.
pub(crate) struct Fetcher {
    client: reqwest::Client,
    location: RemoteLocation,
    timeout: Duration,
    allow_http: bool,
    /// The `jwks_uri` found by discovery; forgotten after a failed fetch so the next one
    /// discovers again (an IdP may move its keys).
    discovered: Mutex<Option<Url>>,
}

impl Fetcher {
    /// Checks the URL and builds the client (trust: system store plus `ca_file`). No
    /// request is made.
    pub fn new(source: &RemoteKeySource) -> Result<Fetcher, AuthSetupError> {
        let (key, url) = match &source.location {
            RemoteLocation::JwksUrl(url) => ("auth.jwt.jwks_url", url),
            RemoteLocation::OidcIssuer(url) => ("auth.jwt.oidc_issuer", url),
        };
        check_url(url, source.allow_http).map_err(|reason| AuthSetupError::BadUrl {
            key,
            url: url.clone(),
            reason,
        })?;
        let roots =
            crate::tls::client_roots(source.ca_file.as_deref()).map_err(AuthSetupError::CaFile)?;
        let client = crate::tls::http_client(roots)
            .map_err(AuthSetupError::HttpClient)?
            .https_only(!source.allow_http)
            .connect_timeout(source.timeout)
            .timeout(source.timeout)
            .build()
            .map_err(|e| AuthSetupError::HttpClient(e.to_string()))?;
        Ok(Fetcher {
            client,
            location: source.location.clone(),
            timeout: source.timeout,
            allow_http: source.allow_http,
            discovered: Mutex::new(None),
        })
    }

    /// The configured URL (for status and logs).
    pub fn configured_url(&self) -> &str {
        match &self.location {
            RemoteLocation::JwksUrl(url) | RemoteLocation::OidcIssuer(url) => url,
        }
    }

    /// `jwks_url` or `oidc_issuer`, as `ready` names the source.
    pub fn kind(&self) -> &'static str {
        match &self.location {
            RemoteLocation::JwksUrl(_) => "jwks_url",
            RemoteLocation::OidcIssuer(_) => "oidc_issuer",
        }
    }

    /// Fetches the JWKS document (after discovery for an OIDC issuer).
    pub async fn fetch(&self) -> Result<Fetched, FetchError> {
        let url = match &self.location {
            RemoteLocation::JwksUrl(url) => parse(url)?,
            RemoteLocation::OidcIssuer(issuer) => self.jwks_uri(issuer).await?,
        };
        let result = self.get(&url).await;
        if result.is_err() {
            *self.discovered.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        result
    }

    async fn jwks_uri(&self, issuer: &str) -> Result<Url, FetchError> {
        if let Some(url) = self
            .discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(url);
        }
        let url = parse(&format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ))?;
        let document = self.get(&url).await?;
        let jwks_uri = discovered_jwks_uri(&url, &document.body, issuer, self.allow_http)?;
        *self.discovered.lock().unwrap_or_else(|e| e.into_inner()) = Some(jwks_uri.clone());
        Ok(jwks_uri)
    }

    /// One GET, status 200 only, body read up to the size cap.
    async fn get(&self, url: &Url) -> Result<Fetched, FetchError> {
        let name = url.to_string();
        let transport = |e: reqwest::Error| match e.is_timeout() {
            true => FetchError::Timeout {
                url: name.clone(),
                ms: self.timeout.as_millis(),
            },
            false => FetchError::Transport {
                url: name.clone(),
                reason: error_chain(&e),
            },
        };
        let mut response = self
            .client
            .get(url.clone())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport)?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status {
                url: name,
                status: response.status().as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge { url: name.clone() };
        if response
            .content_length()
            .is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(too_large());
        }
        let max_age = max_age(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { body, max_age })
    }
}

/// The OIDC discovery document's `jwks_uri`, once its `issuer` is exactly the configured
/// one (OpenID Connect Discovery §4.3): a document for another issuer is refused.
fn discovered_jwks_uri(
    url: &Url,
    body: &[u8],
    issuer: &str,
    allow_http: bool,
) -> Result<Url, FetchError> {
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    let bad = |reason: String| FetchError::Document {
        url: url.to_string(),
        reason,
    };
    let document: Discovery = serde_json::from_slice(body)
        .map_err(|e| bad(format!("not an OpenID configuration document: {e}")))?;
    if document.issuer != issuer {
        return Err(bad(format!(
            "the document is for issuer `{}`, not the configured `{issuer}`",
            document.issuer
        )));
    }
    check_url(&document.jwks_uri, allow_http)
        .map_err(|reason| bad(format!("jwks_uri `{}` {reason}", document.jwks_uri)))?;
    parse(&document.jwks_uri)
}

/// Whether a key source URL may be fetched: absolute `https://` with a host and no
/// credentials (`http://` where allowed: development and test). The same rule for the
/// validator, the constructor and a discovered `jwks_uri`.
pub fn check_url(url: &str, allow_http: bool) -> Result<(), &'static str> {
    let parsed = Url::parse(url).map_err(|_| "is not an absolute URL")?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => return Err("is not https:// (keys fetched over http can be swapped in transit)"),
        _ => return Err("is not an https:// URL"),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("carries credentials");
    }
    Ok(())
}

fn parse(url: &str) -> Result<Url, FetchError> {
    Url::parse(url).map_err(|e| FetchError::Document {
        url: url.to_owned(),
        reason: format!("not a URL: {e}"),
    })
}

/// `max-age` of `Cache-Control` (RFC 9111 §5.2.2.1); `no-cache` / `no-store` read as 0,
/// which the schedule raises to the min interval.
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
            match name.to_ascii_lowercase().as_str() {
                "no-cache" | "no-store" => return Some(Duration::ZERO),
                "max-age" => {
                    if let Ok(seconds) = arg.trim_matches('"').parse::<u64>() {
                        found = Some(Duration::from_secs(seconds));
                    }
                }
                _ => {}
            }
        }
    }
    found
}

/// The error and its causes in one line (reqwest's own text is only the outer layer).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(CACHE_CONTROL, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age(&headers(&["public, max-age=300"])),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            max_age(&headers(&["Max-Age=\"60\", must-revalidate"])),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            max_age(&headers(&["max-age=60", "no-store"])),
            Some(Duration::ZERO)
        );
        assert_eq!(max_age(&headers(&["public"])), None);
        assert_eq!(max_age(&headers(&["max-age=soon"])), None);
        assert_eq!(max_age(&HeaderMap::new()), None);
    }

    #[test]
    fn only_https_urls_with_a_host_unless_http_is_allowed() {
        assert_eq!(check_url("https://idp.example/jwks", false), Ok(()));
        assert!(check_url("http://idp.example/jwks", false).is_err());
        assert_eq!(check_url("http://127.0.0.1:9/jwks", true), Ok(()));
        assert!(check_url("file:///etc/passwd", true).is_err());
        assert!(check_url("https://user:pw@idp.example/", false).is_err());
        assert!(check_url("idp.example/jwks", false).is_err());
    }

    #[test]
    fn discovery_must_name_the_configured_issuer_exactly() {
        let url = Url::parse("https://idp.example/.well-known/openid-configuration").unwrap();
        let doc = |issuer: &str, jwks: &str| {
            serde_json::json!({"issuer": issuer, "jwks_uri": jwks})
                .to_string()
                .into_bytes()
        };
        let ok = discovered_jwks_uri(
            &url,
            &doc("https://idp.example/", "https://keys.idp.example/jwks"),
            "https://idp.example/",
            false,
        );
        assert_eq!(ok.unwrap().as_str(), "https://keys.idp.example/jwks");
        let other = discovered_jwks_uri(
            &url,
            &doc("https://evil.example/", "https://idp.example/jwks"),
            "https://idp.example/",
            false,
        );
        assert!(
            matches!(other, Err(FetchError::Document { ref reason, .. }) if reason.contains("evil.example")),
            "{other:?}"
        );
        let slash = discovered_jwks_uri(
            &url,
            &doc("https://idp.example", "https://idp.example/jwks"),
            "https://idp.example/",
            false,
        );
        assert!(slash.is_err(), "a trailing slash is part of the issuer");
        let plain = discovered_jwks_uri(
            &url,
            &doc("https://idp.example/", "http://idp.example/jwks"),
            "https://idp.example/",
            false,
        );
        assert!(plain.is_err(), "jwks_uri must be https");
    }
}
