//! `/metrics` is what a real Prometheus scrapes cleanly: text format 0.0.4 checked by
//! Prometheus' own `promtool check metrics` (Debian package `prometheus`, installed by
//! `scripts/test`), and OpenMetrics when the scraper asks for it.

use std::io::Write;
use std::process::{Command, Stdio};

use super::harness::*;

/// Runs `promtool check metrics` over `text`; its findings, or `None` when clean.
fn promtool(text: &str) -> Option<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool not found ({e}): install Debian's `prometheus` (scripts/test does)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (!out.status.success() || !said.trim().is_empty()).then_some(said)
}

#[tokio::test]
async fn metrics_pass_promtool_and_openmetrics_is_served_when_asked_for() {
    let s = TestServer::start(&[]).await;
    // Every family with samples: a chat run, a refused token, HTTP requests.
    let mut c = s.user("alice").await;
    let ack = c.ask_acked("m1", "what is 2+2?", None).await;
    c.run_events(ack["run_id"].as_str().unwrap()).await;
    let refused = s.connect().bearer("not-a-token").open().await;
    drop(refused);
    assert_eq!(s.http("GET", "/health", &[]).await.status, 200);

    let text = s.http("GET", "/metrics", &[]).await;
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for family in [
        "portcullis_connections_total",
        "portcullis_run_duration_seconds_bucket",
        "portcullis_send_queue_bytes ",
        "portcullis_send_queue_bytes_max ",
        "portcullis_http_request_duration_seconds_count{handler=\"health\",code=\"200\"}",
    ] {
        assert!(
            text.body.contains(family),
            "{family} missing:\n{}",
            text.body
        );
    }
    // The chat's store calls were timed: accepting the message and finishing the run.
    for op in ["accept_message", "finish_run"] {
        let count = sample(
            &text.body,
            &format!("portcullis_store_call_duration_seconds_count{{kind=\"{op}\"}}"),
        );
        assert!(count >= 1.0, "{op} not timed:\n{}", text.body);
    }
    if let Some(findings) = promtool(&text.body) {
        panic!("promtool check metrics:\n{findings}\n---\n{}", text.body);
    }

    let om = s
        .http(
            "GET",
            "/metrics",
            &[(
                "Accept",
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            )],
        )
        .await;
    assert!(
        om.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        om.headers
    );
    assert!(om.body.trim_end().ends_with("# EOF"), "{}", om.body);
}

/// The value of the sample named exactly `series` (name and labels), or 0.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
