//! PROTOCOL.md §1 over real sockets: every token source, every rejection path in both
//! `reject_at` modes, Origin checks, bypass rules and the 426 answer to plain GETs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::harness::*;
use portcullis::wire::ClientMessage;

/// Sources without `first_message`, so a missing token is refused instead of awaited.
const NO_FIRST_MESSAGE: (&str, &str) = (
    "AUTH__TOKEN_SOURCES",
    r#"["header", "subprotocol", "query"]"#,
);
const HANDSHAKE: (&str, &str) = ("AUTH__REJECT_AT", "handshake");

async fn established(c: &mut Client, user: &str) -> Value {
    let est = c.recv_type("connection_established").await;
    assert_eq!(est["user_id"], user, "{est}");
    est
}

/// An after-accept refusal: exactly one `error` with `code`, then close `close`.
async fn refused_after_accept(c: &mut Client, code: &str, close: u16) {
    let (msgs, got) = c.until_close().await;
    assert_eq!(
        msgs.len(),
        1,
        "exactly one message before the close: {msgs:?}"
    );
    assert_eq!(msgs[0]["type"], "error", "{}", msgs[0]);
    assert_eq!(msgs[0]["code"], code, "{}", msgs[0]);
    assert!(msgs[0]["message"].is_string(), "{}", msgs[0]);
    assert_eq!(msgs[0]["retryable"], false, "{}", msgs[0]);
    assert_eq!(got, close, "close code for {code}");
}

fn assert_401(reply: &HttpReply, code: &str) {
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#),
        "{reply:?}"
    );
    let body = reply.json();
    assert_eq!(body["error_code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

#[tokio::test]
async fn authorization_header_authenticates() {
    let s = TestServer::start(&[]).await;
    let (mut c, _) = s
        .connect()
        .bearer(&token("alice", 600))
        .open()
        .await
        .unwrap();
    let est = established(&mut c, "alice").await;
    assert_eq!(est["auth"], "jwt");
}

#[tokio::test]
async fn subprotocol_token_selects_protocol_and_never_echoes_the_token() {
    let s = TestServer::start(&[]).await;
    let t = token("alice", 600);
    let encoded = URL_SAFE_NO_PAD.encode(&t);
    for entry in [format!("jwt.{t}"), format!("jwt.{encoded}")] {
        let (mut c, resp) = s
            .connect()
            .subprotocols(&["portcullis.v1", &entry])
            .open()
            .await
            .unwrap();
        let selected: Vec<_> = resp
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .collect();
        assert_eq!(selected, ["portcullis.v1"], "{entry}");
        for (name, value) in resp.headers() {
            let v = value.to_str().unwrap_or("");
            assert!(
                !v.contains(&t) && !v.contains(&encoded),
                "response header {name} echoes the token"
            );
        }
        established(&mut c, "alice").await;
    }
}

#[tokio::test]
async fn only_token_entry_offered_is_selected() {
    let s = TestServer::start(&[]).await;
    let entry = format!("jwt.{}", token("alice", 600));
    let (mut c, resp) = s.connect().subprotocols(&[&entry]).open().await.unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"].to_str().unwrap(),
        entry
    );
    established(&mut c, "alice").await;
}

#[tokio::test]
async fn query_token_works_when_enabled_and_is_refused_when_disabled() {
    let s = TestServer::start(&[]).await;
    let url = s.url(&format!("/websocket?access_token={}", token("alice", 600)));
    let (mut c, _) = Connect::new(url.clone()).open().await.unwrap();
    established(&mut c, "alice").await;

    let off = TestServer::start(&[("AUTH__TOKEN_SOURCES", r#"["header", "subprotocol"]"#)]).await;
    let url = off.url(&format!("/websocket?access_token={}", token("alice", 600)));
    let (mut c, _) = Connect::new(url).open().await.unwrap();
    refused_after_accept(&mut c, "NO_TOKEN", 4401).await;
}

#[tokio::test]
async fn first_auth_message_authenticates() {
    let s = TestServer::start(&[]).await;
    let (mut c, _) = s.connect().open().await.unwrap();
    c.send_msg(ClientMessage::auth(&token("alice", 600))).await;
    let est = established(&mut c, "alice").await;
    assert_eq!(est["auth"], "jwt");
    c.ping_pong().await;
}

#[tokio::test]
async fn an_invalid_first_auth_message_is_refused_in_both_modes() {
    for overrides in [&[][..], &[HANDSHAKE][..]] {
        let s = TestServer::start(overrides).await;
        let (mut c, _) = s.connect().open().await.unwrap();
        c.send_msg(ClientMessage::auth(&token("alice", -60))).await;
        refused_after_accept(&mut c, "TOKEN_EXPIRED", 4401).await;
        let (mut c, _) = s.connect().open().await.unwrap();
        c.send(json!({ "type": "auth" })).await;
        refused_after_accept(&mut c, "INVALID_TOKEN", 4401).await;
    }
}

#[tokio::test]
async fn the_connection_limit_is_4429_after_accept_and_429_at_handshake() {
    for overrides in [&[][..], &[HANDSHAKE][..]] {
        let mut env = vec![("SERVER__MAX_CONNECTIONS", "1")];
        env.extend_from_slice(overrides);
        let s = TestServer::start(&env).await;
        let mut first = s.user("alice").await;
        let conn = s.connect().bearer(&token("bob", 600));
        if overrides.is_empty() {
            let (mut c, _) = conn.open().await.unwrap();
            let (msgs, code) = c.until_close().await;
            assert_eq!(code, 4429, "{msgs:?}");
            assert_eq!(msgs.len(), 1, "{msgs:?}");
            assert_eq!(msgs[0]["type"], "error");
            assert_eq!(msgs[0]["code"], "CONNECTION_LIMIT", "{}", msgs[0]);
            assert_eq!(msgs[0]["retryable"], true, "{}", msgs[0]);
        } else {
            let reply = conn.refused().await;
            assert_eq!(reply.status, 429, "{reply:?}");
            assert_eq!(reply.json()["error_code"], "CONNECTION_LIMIT", "{reply:?}");
            assert!(reply.header("www-authenticate").is_none());
        }
        first.ping_pong().await;
        // The slot comes back when the first connection ends.
        first.close().await;
        let app = s.app().clone();
        let started = tokio::time::Instant::now();
        while app.connections.available_permits() == 0 {
            assert!(
                started.elapsed() < FRAME_TIMEOUT,
                "the slot was never released"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        s.user("bob").await.ping_pong().await;
    }
}

#[tokio::test]
async fn non_auth_first_message_closes_4401_after_accept() {
    let s = TestServer::start(&[]).await;
    let (mut c, _) = s.connect().open().await.unwrap();
    c.send_msg(ClientMessage::Ping {}).await;
    refused_after_accept(&mut c, "NO_TOKEN", 4401).await;
}

#[tokio::test]
async fn non_auth_first_message_closes_1008_in_handshake_mode() {
    let s = TestServer::start(&[HANDSHAKE]).await;
    let (mut c, _) = s.connect().open().await.unwrap();
    c.send_msg(ClientMessage::user_message("m1", "hi", None, None))
        .await;
    let (msgs, code) = c.until_close().await;
    assert_eq!(code, 1008, "{msgs:?}");
    assert!(msgs.iter().all(|m| m["type"] == "error"), "{msgs:?}");
}

#[tokio::test]
async fn first_message_timeout_closes_4408() {
    let s = TestServer::start(&[("AUTH__FIRST_MESSAGE_TIMEOUT_MS", "200")]).await;
    let (mut c, _) = s.connect().open().await.unwrap();
    let (msgs, code) = c.until_close().await;
    assert_eq!(code, 4408, "{msgs:?}");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["code"], "AUTH_TIMEOUT");
}

#[tokio::test]
async fn tokens_for_different_subjects_are_refused() {
    let s = TestServer::start(&[]).await;
    let bob = format!("jwt.{}", token("bob", 600));
    let (mut c, _) = s
        .connect()
        .bearer(&token("alice", 600))
        .subprotocols(&["portcullis.v1", &bob])
        .open()
        .await
        .unwrap();
    refused_after_accept(&mut c, "CONFLICTING_TOKENS", 4401).await;

    let hs = TestServer::start(&[HANDSHAKE]).await;
    let url = hs.url(&format!("/websocket?access_token={}", token("bob", 600)));
    let reply = Connect::new(url)
        .bearer(&token("alice", 600))
        .refused()
        .await;
    assert_401(&reply, "CONFLICTING_TOKENS");

    // The same subject in two places is fine.
    let (mut c, _) = s
        .connect()
        .bearer(&token("alice", 600))
        .subprotocols(&["portcullis.v1", &format!("jwt.{}", token("alice", 300))])
        .open()
        .await
        .unwrap();
    established(&mut c, "alice").await;
}

/// Each bad credential with the code it must be refused with. `None` is no token at all.
fn bad_credentials() -> Vec<(&'static str, Option<String>, &'static str)> {
    let mut wrong_iss = claims("alice", 600);
    wrong_iss["iss"] = json!("someone-else");
    let mut wrong_aud = claims("alice", 600);
    wrong_aud["aud"] = json!("another-service");
    vec![
        ("no token", None, "NO_TOKEN"),
        (
            "bad signature",
            Some(sign_with(
                &claims("alice", 600),
                "not-the-test-secret-0123456789abcdef",
            )),
            "INVALID_TOKEN",
        ),
        ("expired", Some(token("alice", -60)), "TOKEN_EXPIRED"),
        ("wrong issuer", Some(sign(&wrong_iss)), "INVALID_TOKEN"),
        ("wrong audience", Some(sign(&wrong_aud)), "INVALID_TOKEN"),
        ("alg none", Some(alg_none_token("alice")), "INVALID_TOKEN"),
        ("garbage", Some("not-a-jwt".to_string()), "INVALID_TOKEN"),
    ]
}

#[tokio::test]
async fn every_rejection_after_accept_sends_one_error_then_4401() {
    let s = TestServer::start(&[NO_FIRST_MESSAGE]).await;
    for (what, tok, code) in bad_credentials() {
        let mut conn = s.connect();
        if let Some(t) = &tok {
            conn = conn.bearer(t);
        }
        let (mut c, resp) = conn
            .open()
            .await
            .unwrap_or_else(|e| panic!("{what}: the upgrade must complete: {e}"));
        assert_eq!(resp.status(), 101, "{what}");
        let (msgs, close) = c.until_close().await;
        assert_eq!(msgs.len(), 1, "{what}: {msgs:?}");
        assert_eq!(msgs[0]["type"], "error", "{what}");
        assert_eq!(msgs[0]["code"], code, "{what}: {}", msgs[0]);
        assert_eq!(close, 4401, "{what}");
    }
}

#[tokio::test]
async fn every_rejection_at_handshake_is_401_with_challenge_and_json() {
    let s = TestServer::start(&[NO_FIRST_MESSAGE, HANDSHAKE]).await;
    for (what, tok, code) in bad_credentials() {
        let mut conn = s.connect();
        if let Some(t) = &tok {
            conn = conn.bearer(t);
        }
        let reply = conn.refused().await;
        assert_401(&reply, code);
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{what}"
        );
    }
    // The subprotocol source is refused the same way.
    let bad = format!("jwt.{}", token("alice", -60));
    let reply = s
        .connect()
        .subprotocols(&["portcullis.v1", &bad])
        .refused()
        .await;
    assert_401(&reply, "TOKEN_EXPIRED");
}

#[tokio::test]
async fn disallowed_origin_is_403_and_missing_origin_is_allowed() {
    for overrides in [&[][..], &[HANDSHAKE][..]] {
        let s = TestServer::start(overrides).await;
        for origin in [
            "http://evil.example",
            "http://localhost:8080.evil.example",
            "http://localhost:808",
            "https://localhost:8080",
        ] {
            let reply = s
                .connect()
                .origin(Some(origin))
                .bearer(&token("alice", 600))
                .refused()
                .await;
            assert_eq!(reply.status, 403, "{origin}: {reply:?}");
            assert_eq!(reply.json()["error_code"], "ORIGIN_NOT_ALLOWED");
        }
        for origin in [None, Some("http://127.0.0.1:8080")] {
            let (mut c, _) = s
                .connect()
                .origin(origin)
                .bearer(&token("alice", 600))
                .open()
                .await
                .unwrap();
            established(&mut c, "alice").await;
        }
    }
}

#[tokio::test]
async fn plain_get_on_websocket_paths_is_426_json() {
    let s = TestServer::start(&[]).await;
    for path in ["/websocket", "/ws"] {
        let reply = s.http("GET", path, &[]).await;
        assert_eq!(reply.status, 426, "{path}: {reply:?}");
        let body = reply.json();
        assert_eq!(body["path"], path, "{body}");
        assert_eq!(body["protocol"], "portcullis.v1", "{body}");
        assert!(body["error_code"].is_string(), "{body}");
        assert_eq!(reply.header("sec-websocket-version"), Some("13"), "{path}");
    }
    // An upgrade in a version this server does not speak: 426 naming version 13.
    let reply = s
        .http(
            "GET",
            "/websocket",
            &[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "8"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        )
        .await;
    assert_eq!(reply.status, 426, "{reply:?}");
    assert_eq!(
        reply.header("sec-websocket-version"),
        Some("13"),
        "{reply:?}"
    );
    assert_eq!(reply.json()["error_code"], "UPGRADE_REQUIRED");
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("version 13, not 8")
    );
    // The alias serves the same socket handler.
    let (mut c, _) = Connect::new(s.url("/ws"))
        .bearer(&token("alice", 600))
        .open()
        .await
        .unwrap();
    established(&mut c, "alice").await;
}

#[tokio::test]
async fn bypass_rule_admits_its_identity_only_with_the_right_secret() {
    // Without first-message auth a missing token is refused at the handshake, so "not
    // bypassed" is visible as a 401.
    let s = TestServer::start(&[HANDSHAKE, NO_FIRST_MESSAGE]).await;
    let (mut c, _) = s
        .connect()
        .header(BYPASS_HEADER, BYPASS_SECRET)
        .open()
        .await
        .unwrap();
    let est = established(&mut c, "load-tester").await;
    assert_eq!(est["auth"], "bypass:load-test");
    assert!(est["token_expires_at"].is_null(), "{est}");
    c.ping_pong().await;

    // A wrong secret is not a bypass: token auth applies, and there is no token.
    let reply = s
        .connect()
        .header(BYPASS_HEADER, "test-bypass-secret-0123456780")
        .refused()
        .await;
    assert_401(&reply, "NO_TOKEN");
    // Neither is the absence of the header.
    assert_401(&s.connect().refused().await, "NO_TOKEN");
    // A wrong secret with a valid token is the token's user, not the bypass identity.
    let (mut c, _) = s
        .connect()
        .header(BYPASS_HEADER, "wrong")
        .bearer(&token("alice", 600))
        .open()
        .await
        .unwrap();
    assert_eq!(established(&mut c, "alice").await["auth"], "jwt");
}

#[tokio::test]
async fn connection_established_has_every_field() {
    let s = TestServer::start(&[
        ("WEBSOCKET__MAX_MESSAGE_BYTES", "1024"),
        ("WEBSOCKET__MESSAGES_PER_MINUTE", "7"),
    ])
    .await;
    let c = claims("alice", 600);
    let (mut conn, resp) = s
        .connect()
        .bearer(&sign(&c))
        .subprotocols(&["portcullis.v1"])
        .open()
        .await
        .unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "portcullis.v1");
    let est = established(&mut conn, "alice").await;
    assert_eq!(est["protocol"], "portcullis.v1");
    assert!(
        est["connection_id"].as_str().unwrap().starts_with("c_"),
        "{est}"
    );
    assert_eq!(est["auth"], "jwt");
    let server_time = chrono::DateTime::parse_from_rfc3339(est["server_time"].as_str().unwrap())
        .expect("server_time is RFC 3339");
    assert_eq!(server_time.offset().local_minus_utc(), 0, "UTC");
    assert!(
        (chrono::Utc::now() - server_time.to_utc())
            .num_seconds()
            .abs()
            < 5
    );
    assert_eq!(est["heartbeat_ms"], 5000);
    let exp = chrono::DateTime::parse_from_rfc3339(est["token_expires_at"].as_str().unwrap())
        .expect("token_expires_at is RFC 3339");
    assert_eq!(exp.timestamp(), c["exp"].as_i64().unwrap());
    assert_eq!(est["limits"]["max_message_bytes"], 1024);
    assert_eq!(est["limits"]["messages_per_minute"], 7);

    // A second connection gets its own id.
    let mut other = s.user("alice").await;
    other.ping_pong().await;
}
