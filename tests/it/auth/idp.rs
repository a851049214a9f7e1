//! A local identity provider for the remote key source tests: HTTPS (a test CA made with
//! rcgen, the server certificate for 127.0.0.1 and localhost) serving
//! `/.well-known/openid-configuration` and `/jwks.json` as HTTP/1.1 with
//! `Connection: close`, signing keys generated per test, and switches to rotate keys, send
//! `Cache-Control`, answer 5xx, redirect, or stop answering. It counts every request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A CA and a server certificate it signed, as PEM.
pub struct TestCa {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    ca_key_pem: String,
}

fn ca_params() -> rcgen::CertificateParams {
    let mut ca = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "portcullis test CA");
    ca
}

impl TestCa {
    /// A fresh CA and a certificate for `127.0.0.1` and `localhost`.
    pub fn new() -> TestCa {
        TestCa::with_validity(None)
    }

    /// As [`TestCa::new`], the server certificate ending on `not_after` (y, m, d) if given.
    pub fn with_validity(not_after: Option<(i32, u8, u8)>) -> TestCa {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca_cert = ca_params().self_signed(&ca_key).expect("CA certificate");
        TestCa::issue(ca_cert.pem(), ca_key.serialize_pem(), not_after)
    }

    /// A new server key and certificate from the same CA (a renewal).
    pub fn with_same_ca(ca: &TestCa) -> TestCa {
        TestCa::issue(ca.ca_pem.clone(), ca.ca_key_pem.clone(), None)
    }

    fn issue(ca_pem: String, ca_key_pem: String, not_after: Option<(i32, u8, u8)>) -> TestCa {
        let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).expect("CA key PEM");
        let issuer = rcgen::Issuer::new(ca_params(), ca_key);
        let key = rcgen::KeyPair::generate().expect("server key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("server params");
        if let Some((y, m, d)) = not_after {
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        TestCa {
            ca_pem,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_key_pem,
        }
    }

    /// Writes the CA certificate to `dir/ca.pem`.
    pub fn write_ca(&self, dir: &std::path::Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write CA");
        path
    }

    /// A TLS acceptor serving the CA-issued certificate (for `localhost` and 127.0.0.1).
    pub fn acceptor(&self) -> TlsAcceptor {
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key PEM");
        let config = rustls::ServerConfig::builder_with_provider(portcullis::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        TlsAcceptor::from(Arc::new(config))
    }
}

/// A signing key and its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
}

impl SigningKey {
    /// A fresh key for `alg` (RSA 2048, P-256, P-384 or Ed25519), published as `kid`.
    pub fn generate(alg: Algorithm, kid: &str) -> SigningKey {
        let (rcgen_alg, pem_kind) = match alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 => {
                (&rcgen::PKCS_RSA_SHA256, "rsa")
            }
            Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, "ec"),
            Algorithm::ES384 => (&rcgen::PKCS_ECDSA_P384_SHA384, "ec"),
            Algorithm::EdDSA => (&rcgen::PKCS_ED25519, "ed"),
            other => panic!("no test key for {other:?}"),
        };
        let pair = rcgen::KeyPair::generate_for(rcgen_alg).expect("key generation");
        let pem = pair.serialize_pem();
        let encoding = match pem_kind {
            "rsa" => EncodingKey::from_rsa_pem(pem.as_bytes()),
            "ec" => EncodingKey::from_ec_pem(pem.as_bytes()),
            _ => EncodingKey::from_ed_pem(pem.as_bytes()),
        }
        .expect("encoding key");
        let mut jwk = match alg {
            // jsonwebtoken derives OKP JWKs from 48-byte PKCS#8 v1 keys only; aws-lc writes
            // v2 (with the public key), so the JWK is written from the raw public key.
            Algorithm::EdDSA => serde_json::from_value(json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA",
                "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw()),
            }))
            .expect("OKP JWK"),
            _ => Jwk::from_encoding_key(&encoding, alg).expect("public JWK"),
        };
        jwk.common.key_id = Some(kid.to_owned());
        SigningKey {
            alg,
            kid: kid.to_owned(),
            encoding,
            jwk,
        }
    }

    /// Signs `claims` with this key, naming its `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// A token naming `kid` whose signature is this key's over another header: cheap to
    /// make in bulk, and refused before any signature check when `kid` is unknown.
    pub fn resign_header_as(signed: &str, alg: Algorithm, kid: &str) -> String {
        let header = json!({"alg": format!("{alg:?}"), "typ": "JWT", "kid": kid});
        let (_, rest) = signed.split_once('.').expect("compact JWT");
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
    }

    /// Signs `claims` with this key, naming `kid` in the header.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

/// How the IdP answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Serves its documents.
    Up,
    /// Answers every request with this status and no document.
    Status(u16),
    /// Accepts the connection, then closes it without a word.
    Hangup,
    /// Redirects every request to this URL.
    Redirect(String),
    /// Serves a JWKS of this many bytes.
    Huge(usize),
}

struct Shared {
    mode: Mode,
    keys: Vec<Jwk>,
    cache_control: Option<String>,
    /// The `issuer` its discovery document claims (default: its own URL).
    discovery_issuer: Option<String>,
    jwks_requests: usize,
    discovery_requests: usize,
    other_requests: usize,
}

/// A running local IdP.
pub struct Idp {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Idp {
    /// Starts serving `keys` over HTTPS with `ca`'s server certificate.
    pub async fn start(ca: &TestCa, keys: &[&SigningKey]) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind IdP");
        let addr = listener.local_addr().expect("IdP address");
        let shared = Arc::new(Mutex::new(Shared {
            mode: Mode::Up,
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
            cache_control: None,
            discovery_issuer: None,
            jwks_requests: 0,
            discovery_requests: 0,
            other_requests: 0,
        }));
        let acceptor = ca.acceptor();
        let state = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, addr, state).await;
                    }
                });
            }
        });
        Idp { addr, shared, task }
    }

    /// `https://127.0.0.1:<port>` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// The issuer URL this IdP's discovery document names by default.
    pub fn issuer(&self) -> String {
        self.url("/")
    }

    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        f(&mut self.shared.lock().expect("IdP state"))
    }

    pub fn set_mode(&self, mode: Mode) {
        self.with(|s| s.mode = mode);
    }

    pub fn set_keys(&self, keys: &[&SigningKey]) {
        self.with(|s| s.keys = keys.iter().map(|k| k.jwk.clone()).collect());
    }

    pub fn set_cache_control(&self, value: &str) {
        self.with(|s| s.cache_control = Some(value.to_owned()));
    }

    pub fn set_discovery_issuer(&self, issuer: &str) {
        self.with(|s| s.discovery_issuer = Some(issuer.to_owned()));
    }

    /// Requests for `/jwks.json` so far.
    pub fn jwks_requests(&self) -> usize {
        self.with(|s| s.jwks_requests)
    }

    /// Requests for the discovery document so far.
    pub fn discovery_requests(&self) -> usize {
        self.with(|s| s.discovery_requests)
    }

    /// Requests for any other path so far.
    pub fn other_requests(&self) -> usize {
        self.with(|s| s.other_requests)
    }
}

/// Reads one request head and answers it.
async fn serve<S>(mut stream: S, addr: SocketAddr, state: Arc<Mutex<Shared>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
    let (status, headers, body) = {
        let mut s = state.lock().expect("IdP state");
        match path.as_str() {
            "/jwks.json" => s.jwks_requests += 1,
            "/.well-known/openid-configuration" => s.discovery_requests += 1,
            _ => s.other_requests += 1,
        }
        answer(&s, &path, addr)
    };
    let Some(status) = status else {
        return; // Mode::Hangup: close without an answer.
    };
    let mut response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

type Answer = (Option<u16>, Vec<(&'static str, String)>, Vec<u8>);

fn answer(s: &Shared, path: &str, addr: SocketAddr) -> Answer {
    let base = format!("https://{addr}");
    match &s.mode {
        Mode::Hangup => return (None, Vec::new(), Vec::new()),
        Mode::Status(code) => return (Some(*code), Vec::new(), b"{}".to_vec()),
        Mode::Redirect(to) => return (Some(302), vec![("Location", to.clone())], Vec::new()),
        Mode::Huge(n) if path == "/jwks.json" => {
            let mut body = br#"{"keys":[],"pad":""#.to_vec();
            body.resize(*n, b'a');
            body.extend_from_slice(br#""}"#);
            return (Some(200), Vec::new(), body);
        }
        _ => {}
    }
    let mut headers = Vec::new();
    if let Some(cc) = &s.cache_control {
        headers.push(("Cache-Control", cc.clone()));
    }
    let body = match path {
        "/jwks.json" => serde_json::to_vec(&JwkSet {
            keys: s.keys.clone(),
        })
        .expect("JWKS"),
        "/.well-known/openid-configuration" => json!({
            "issuer": s.discovery_issuer.clone().unwrap_or_else(|| format!("{base}/")),
            "jwks_uri": format!("{base}/jwks.json"),
            "id_token_signing_alg_values_supported": ["RS256"],
        })
        .to_string()
        .into_bytes(),
        _ => return (Some(404), Vec::new(), b"{}".to_vec()),
    };
    (Some(200), headers, body)
}
