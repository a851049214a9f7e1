//! The HTTP stages: `client_config` (an `http(s)://` base: read the route that tells
//! clients where the socket is, and compare that with where the probe is pointed) and
//! `http` (a plain GET on the WebSocket path must answer 426; anything else is named).

use super::http1::{self, Reply};
use super::net::Dialer;
use super::target::Target;
use super::{Fail, Pass};

/// What the server's `client_config` route says.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// `websocket_url`, as the server gives it to clients.
    pub websocket_url: String,
    /// Its path: what the probe dials on the probed host.
    pub path: String,
    /// `websocket_paths`: every path the server upgrades on.
    pub paths: Vec<String>,
    /// `token_sources`, in the server's order.
    pub token_sources: Vec<String>,
}

/// `client_config`: GET the route and read the WebSocket URL from it.
pub async fn client_config(
    dialer: &Dialer,
    base: &Target,
    path: &str,
) -> Result<(ClientConfig, Pass), Fail> {
    let io = dialer.dial().await.map_err(|e| Fail::new(e, RECONNECT))?;
    let reply = http1::get(
        io,
        &base.authority(),
        path,
        &[("Accept", "application/json")],
    )
    .await
    .map_err(|e| Fail::new(format!("GET {path}: {e}"), RECONNECT))?;
    let json = match (reply.status(), reply.json()) {
        (200, Some(json)) if json.get("websocket_url").is_some() => json,
        (404, _) => {
            return Err(Fail::new(
                format!("GET {path} answered 404: no client_config route here"),
                format!(
                    "declare [[routes]] method = \"GET\", path = \"{path}\", handler = \"client_config\" (or name its path in the URL), or probe the ws:// URL directly"
                ),
            ));
        }
        (300..=399, _) => return Err(redirect(path, &reply)),
        (status, _) => {
            return Err(Fail::new(
                format!(
                    "GET {path} answered {status} without the client_config JSON: {}",
                    reply.snippet()
                ),
                "point the probe at the route whose handler is `client_config` (http://HOST/api/client-config), or probe the ws:// URL directly",
            ));
        }
    };
    let strings = |key: &str| -> Vec<String> {
        json[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let websocket_url = json["websocket_url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let given = Target::parse(&websocket_url).map_err(|e| {
        Fail::new(
            format!(
                "client_config gives websocket_url {websocket_url:?}, which is not usable: {e}"
            ),
            "set client.websocket_url to the ws(s):// URL clients dial",
        )
    })?;
    let config = ClientConfig {
        path: given.path.clone(),
        paths: strings("websocket_paths"),
        token_sources: strings("token_sources"),
        websocket_url,
    };
    Ok((config.clone(), compare(base, &given, &config)))
}

/// The URL clients are given, against the one the probe was pointed at.
fn compare(base: &Target, given: &Target, config: &ClientConfig) -> Pass {
    let probing = base.ws_url(&given.path);
    let detail = format!(
        "clients are told to dial {}; probing {probing}",
        config.websocket_url
    );
    let mut warnings = Vec::new();
    if !same_place(given, base) {
        warnings.push(format!(
            "client.websocket_url names {}:{}, not the {}:{} probed: clients that reach this server at {} dial elsewhere (set client.websocket_url, and server.public_url, to the address clients reach)",
            given.host, given.port, base.host, base.port, base.authority()
        ));
    }
    if base.secure() && !given.secure() {
        warnings.push("the page is served over https but client.websocket_url is ws://: browsers block it as mixed content (use wss://)".to_string());
    }
    if !config.paths.is_empty() && !config.paths.contains(&given.path) {
        warnings.push(format!(
            "client.websocket_url's path {} is not one of the server's WebSocket paths {:?} (websocket.path, websocket.aliases)",
            given.path, config.paths
        ));
    }
    if warnings.is_empty() {
        Pass::new(detail)
    } else {
        Pass::warn(detail, warnings.join("; "))
    }
}

/// The same host and port; the loopback names count as one (a client told `localhost`
/// reaches the server probed at `127.0.0.1`).
fn same_place(a: &Target, b: &Target) -> bool {
    let loopback = |h: &str| matches!(h, "localhost" | "127.0.0.1" | "::1");
    a.port == b.port && (a.host == b.host || (loopback(&a.host) && loopback(&b.host)))
}

/// `http`: a plain GET (no `Upgrade`) on the WebSocket path must answer 426.
pub async fn plain_get(dialer: &Dialer, ws: &Target, known: &[String]) -> Result<Pass, Fail> {
    let io = dialer.dial().await.map_err(|e| Fail::new(e, RECONNECT))?;
    let path = &ws.path;
    let reply = http1::get(io, &ws.authority(), path, &[])
        .await
        .map_err(|e| Fail::new(format!("GET {path}: {e}"), "the server accepted the connection but did not answer HTTP: check that this port serves portcullis (server.listen) and not another protocol"))?;
    let status = reply.status();
    let ct = reply.header("content-type").unwrap_or("no content-type");
    let paths = if known.is_empty() {
        String::new()
    } else {
        format!(" (the server's WebSocket paths: {})", known.join(", "))
    };
    match status {
        426 => Ok(Pass::new(format!(
            "GET {path} answered 426 Upgrade Required, as a WebSocket path must"
        ))),
        200 if reply.is_html() => Err(Fail::new(
            format!(
                "GET {path} answered 200 with an HTML page ({ct}), not 426: {}",
                reply.snippet()
            ),
            format!(
                "a web page (a static site, an SPA fallback or the proxy's default) answers {path}: route it to portcullis with the Upgrade and Connection headers passed on, or fix client.websocket_url{paths}"
            ),
        )),
        200 => Err(Fail::new(
            format!(
                "GET {path} answered 200 {ct} instead of 426: {}",
                reply.snippet()
            ),
            format!(
                "{path} is served as a plain HTTP route, so the upgrade never happens: declare it in websocket.path or websocket.aliases and drop the [[routes]] entry (or proxy location) that answers it{paths}"
            ),
        )),
        404 => Err(Fail::new(
            format!("GET {path} answered 404: nothing serves this path"),
            format!(
                "the client dials a path the server does not upgrade on (/ws vs /websocket?): make client.websocket_url name websocket.path, or add {path} to websocket.aliases{paths}"
            ),
        )),
        300..=399 => Err(redirect(path, &reply)),
        502..=504 => Err(Fail::new(
            format!("GET {path} answered {status}: a proxy could not reach portcullis"),
            "the proxy's upstream is down or wrong: check that portcullis runs and the proxy points at server.listen",
        )),
        _ => Err(Fail::new(
            format!(
                "GET {path} answered {status} {ct} instead of 426: {}",
                reply.snippet()
            ),
            format!(
                "something other than a portcullis WebSocket path answers {path}: check the proxy's routing and client.websocket_url{paths}"
            ),
        )),
    }
}

fn redirect(path: &str, reply: &Reply) -> Fail {
    let location = reply.header("location").unwrap_or("(no Location)");
    Fail::new(
        format!(
            "GET {path} answered {} redirecting to {location}",
            reply.status()
        ),
        format!(
            "WebSocket clients do not follow redirects: give clients the final URL in client.websocket_url (an http->https redirect means dial wss://), or stop the proxy redirecting {path}"
        ),
    )
}

const RECONNECT: &str = "the connection the earlier stages opened could not be opened again: the server is flapping or limits connections (server.max_connections)";

#[cfg(test)]
mod tests {
    use super::*;

    fn compared(base: &str, given: &str, paths: &[&str]) -> Option<String> {
        let (base, given) = (Target::parse(base).unwrap(), Target::parse(given).unwrap());
        let config = ClientConfig {
            websocket_url: given.ws_url(&given.path),
            path: given.path.clone(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            token_sources: Vec::new(),
        };
        compare(&base, &given, &config).warning
    }

    #[test]
    fn the_url_clients_are_given_is_compared_with_the_one_probed() {
        let ws = "ws://localhost:8080/websocket";
        assert_eq!(compared("http://127.0.0.1:8080", ws, &["/websocket"]), None);
        let other_port = compared("http://127.0.0.1:9000", ws, &[]).unwrap();
        assert!(other_port.contains("client.websocket_url"), "{other_port}");
        let mixed = compared("https://chat.example.com", "ws://chat.example.com/ws", &[]).unwrap();
        assert!(
            mixed.contains("mixed content") && mixed.contains("443"),
            "{mixed}"
        );
        let path = compared("http://h", "ws://h/wss", &["/websocket", "/ws"]).unwrap();
        assert!(path.contains("websocket.aliases"), "{path}");
    }
}
