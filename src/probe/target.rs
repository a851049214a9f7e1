//! What `portcullis probe` was pointed at: a `ws(s)://` endpoint, or an `http(s)://` base
//! whose `client_config` route names the endpoint.

/// The URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `ws://`.
    Ws,
    /// `wss://`.
    Wss,
    /// `http://` base.
    Http,
    /// `https://` base.
    Https,
}

/// A parsed probe URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Scheme.
    pub scheme: Scheme,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (the scheme's default when absent).
    pub port: u16,
    /// Path and query (`/` when absent).
    pub path: String,
}

impl Target {
    /// Parses `ws://`, `wss://`, `http://` or `https://` URLs.
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL ({e})"))?;
        let scheme = match uri.scheme_str() {
            Some("ws") => Scheme::Ws,
            Some("wss") => Scheme::Wss,
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => {
                return Err(format!(
                    "`{url}` must start with ws://, wss://, http:// or https://"
                ));
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("`{url}` has no host"))?;
        let secure = matches!(scheme, Scheme::Wss | Scheme::Https);
        Ok(Target {
            scheme,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: uri.port_u16().unwrap_or(if secure { 443 } else { 80 }),
            path: uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into()),
        })
    }

    /// TLS is spoken (`wss://`, `https://`).
    pub fn secure(&self) -> bool {
        matches!(self.scheme, Scheme::Wss | Scheme::Https)
    }

    /// An `http(s)://` base: the WebSocket URL comes from `client_config`.
    pub fn is_base(&self) -> bool {
        matches!(self.scheme, Scheme::Http | Scheme::Https)
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.secure() { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The WebSocket URL on this host for `path`.
    pub fn ws_url(&self, path: &str) -> String {
        let scheme = if self.secure() { "wss" } else { "ws" };
        format!("{scheme}://{}{path}", self.authority())
    }

    /// This target with the WebSocket scheme and `path`.
    pub fn with_ws_path(&self, path: &str) -> Target {
        Target {
            scheme: if self.secure() {
                Scheme::Wss
            } else {
                Scheme::Ws
            },
            path: path.to_string(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme_with_default_ports_and_paths() {
        let t = Target::parse("wss://chat.example.com/ws?x=1").unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port, t.path.as_str()),
            (Scheme::Wss, "chat.example.com", 443, "/ws?x=1")
        );
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((t.port, t.path.as_str(), t.is_base()), (8080, "/", true));
        assert_eq!(t.ws_url("/websocket"), "ws://127.0.0.1:8080/websocket");
        let t = Target::parse("https://[::1]/").unwrap();
        assert_eq!((t.host.as_str(), t.authority()), ("::1", "[::1]".into()));
        assert!(Target::parse("ftp://x/").unwrap_err().contains("ws://"));
        assert!(Target::parse("not a url").is_err());
    }
}
