//! The target URL: parsing, resolution and the loopback-only rule.
//!
//! Refusing non-loopback hosts here, before any socket opens, is what keeps this machine
//! from ever sending load elsewhere by a typo in `--url`.

use std::net::SocketAddr;

use http::Uri;

#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
}

impl Target {
    pub async fn resolve(url: &str, allow_remote: bool) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad --url {url:?}: {e}"))?;
        if uri.scheme_str() != Some("ws") {
            return Err(format!("--url must be ws:// (got {url:?})"));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("--url {url:?} has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
        let addr = *addrs
            .first()
            .ok_or_else(|| format!("{host} resolved to nothing"))?;
        if !allow_remote && !addrs.iter().all(|a| a.ip().is_loopback()) {
            return Err(format!(
                "refusing non-loopback target {host} ({addrs:?}); pass --allow-remote if you really mean it"
            ));
        }
        Ok(Target {
            url: url.to_owned(),
            addr,
        })
    }
}
