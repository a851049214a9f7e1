//! The HTTP checks of `check --online`: a model endpoint's `GET {url}/models` with each
//! agent's model in its list, and a `HEAD` on an HTTP service. Redirects are reported,
//! not followed; errors never print the URL's credentials.

use std::path::Path;
use std::time::Duration;

use super::{Level, Outcome, Problem, unreachable};
use crate::keypath::kp;

/// The checks' HTTP client: the system's trust store plus `ca_file` (a service's own, as
/// `serve` trusts it).
pub(super) fn client(limit: Duration, ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let roots = crate::tls::client_roots(ca_file).map_err(|e| e.to_string())?;
    crate::tls::http_client(roots)?
        .connect_timeout(limit)
        .timeout(limit * 2)
        .user_agent(concat!("portcullis-check/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

/// reqwest's error without the URL (which may carry credentials).
fn reason(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

const MODEL_HINT: &str = "check the service's url (the OpenAI-compatible base, ending in /v1) and that the endpoint runs";

/// `GET {url}/models` (with the service's API key); every `(agent index, model)` must
/// be listed.
pub async fn models(
    url: &str,
    api_key: Option<&str>,
    limit: Duration,
    ca_file: Option<&Path>,
    wanted: &[(usize, &str)],
) -> Outcome {
    let client = match client(limit, ca_file) {
        Ok(c) => c,
        Err(e) => return unreachable(e, MODEL_HINT),
    };
    let models_url = format!("{}/models", url.trim_end_matches('/'));
    let mut request = client.get(&models_url);
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return unreachable(reason(e), MODEL_HINT),
    };
    let status = response.status().as_u16();
    if status != 200 {
        return unhealthy(status);
    }
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) => return unreachable(reason(e), MODEL_HINT),
    };
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return unreachable("GET /models did not answer JSON", MODEL_HINT);
    };
    let listed: Vec<&str> = body["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    Outcome {
        detail: format!("GET /models: {} models listed", listed.len()),
        problems: missing_models(&listed, wanted),
    }
}

/// `E_SERVICE_UNHEALTHY`: `GET /models` answered something other than 200; the hint
/// tells a refused key and a wrong base URL apart.
fn unhealthy(status: u16) -> Outcome {
    Outcome {
        detail: format!("GET /models answered {status}"),
        problems: vec![Problem::new(
            "E_SERVICE_UNHEALTHY",
            format!("GET {{url}}/models answered {status}"),
            match status {
                401 | 403 => {
                    "the endpoint refused the API key (or wants one): check the service's api_key_env"
                }
                404 => "no /models here: the url must be the API base (e.g. https://host/v1)",
                _ => MODEL_HINT,
            },
        )],
    }
}

/// `E_MODEL_NOT_FOUND`: one problem per agent whose model the endpoint does not list,
/// since its first request would fail.
fn missing_models(listed: &[&str], wanted: &[(usize, &str)]) -> Vec<Problem> {
    wanted
        .iter()
        .filter(|(_, model)| !listed.contains(model))
        .map(|(i, model)| Problem {
            level: Level::Error,
            path: Some(kp(&format!("agents[{i}].model"))),
            ..Problem::new(
                "E_MODEL_NOT_FOUND",
                format!(
                    "model `{model}` is not among the {} the endpoint lists",
                    listed.len()
                ),
                format!(
                    "set model to one the endpoint serves: {}",
                    listed
                        .iter()
                        .take(8)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
        .collect()
}

/// `HEAD {url}`: any answer below 500 means the service is there.
pub async fn head(url: &str, limit: Duration, ca_file: Option<&Path>) -> Outcome {
    let hint = "check the service's url and that it runs";
    let client = match client(limit, ca_file) {
        Ok(c) => c,
        Err(e) => return unreachable(e, hint),
    };
    match client.head(url).send().await {
        Err(e) => unreachable(reason(e), hint),
        Ok(r) if r.status().is_server_error() => Outcome {
            detail: format!("HEAD answered {}", r.status().as_u16()),
            problems: vec![Problem::new(
                "E_SERVICE_UNHEALTHY",
                format!("HEAD answered {}", r.status().as_u16()),
                hint,
            )],
        },
        Ok(r) => Outcome {
            detail: format!("HEAD answered {}", r.status().as_u16()),
            problems: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-route OpenAI-compatible server: every request gets `status` and `body`.
    async fn endpoint(status: u16, body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(reply.as_bytes()).await;
            }
        });
        format!("http://{addr}/v1")
    }

    #[tokio::test]
    async fn each_agent_model_must_be_listed() {
        let url = endpoint(
            200,
            r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model"}]}"#,
        )
        .await;
        let limit = Duration::from_secs(5);
        let listed = models(&url, None, limit, None, &[(0, "gpt-4o-mini")]).await;
        assert!(listed.problems.is_empty(), "{}", listed.detail);
        assert_eq!(listed.detail, "GET /models: 1 models listed");
        let missing = models(
            &url,
            None,
            limit,
            None,
            &[(0, "gpt-4o-mini"), (2, "llama3")],
        )
        .await;
        let codes: Vec<_> = missing
            .problems
            .iter()
            .map(|p| (p.code, p.path.as_ref().map(ToString::to_string)))
            .collect();
        assert_eq!(
            codes,
            vec![("E_MODEL_NOT_FOUND", Some("agents[2].model".to_string()))]
        );
        assert!(missing.problems[0].hint.contains("gpt-4o-mini"));

        let refused = models(&endpoint(401, "{}").await, None, limit, None, &[]).await;
        assert_eq!(refused.problems[0].code, "E_SERVICE_UNHEALTHY");
        assert!(refused.problems[0].hint.contains("api_key_env"));
    }
}
