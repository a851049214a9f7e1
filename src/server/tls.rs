//! Native TLS (`[server.tls]`): the acceptor, its certificate reloading, and the accept
//! loop that serves the warp filters over TLS.
//!
//! warp 0.4 can only serve a plain `TcpListener` (its `Accept` trait is private and its
//! `tls` feature is a stub), so TLS connections are served here with hyper directly, as
//! warp's own loop does: one task per connection, HTTP/1.1 with upgrades (WebSockets),
//! graceful shutdown through hyper-util. The TLS handshake runs in that task, bounded in
//! time, so a slow client never holds up accepting others.
//!
//! The certificate is resolved per handshake from a swappable slot: when the files change
//! (checked every [`POLL`]) or on SIGHUP, a new chain and key are read and, only if they
//! parse and match, swapped in. Open connections keep the session they negotiated.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use warp::Filter;
use warp::reply::Response;

use crate::config::TlsConfig;
use crate::proxy::PeerAddr;
use crate::tls::{PemError, certified_key};

/// How often the certificate files are checked for changes.
pub const POLL: Duration = Duration::from_secs(2);
/// Longest TLS handshake accepted.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up; the same codes as the validator's `[server.tls]` rules.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(pub PemError);

impl TlsSetupError {
    /// The validator's code for this failure.
    pub fn code(&self) -> &'static str {
        match &self.0 {
            PemError::Read { .. } => "E_TLS_FILE",
            PemError::Certificate { .. } => "E_TLS_CERT",
            PemError::Key { .. } => "E_TLS_KEY",
            PemError::KeyMismatch { .. } => "E_TLS_KEY_MISMATCH",
        }
    }

    /// As a finding on `server.tls.*`, for the compile step in `check`.
    pub fn finding(&self, config: &TlsConfig) -> crate::diagnostic::Finding {
        let key = match &self.0 {
            PemError::Read { path, .. } if *path == config.cert_file => "server.tls.cert_file",
            PemError::Certificate { .. } => "server.tls.cert_file",
            _ => "server.tls.key_file",
        };
        crate::diagnostic::Finding::error(
            self.code(),
            crate::keypath::kp(key),
            self.0.to_string(),
            "see `portcullis check`: the files must parse and the key must be the certificate's",
        )
    }
}

/// The certificate slot every handshake reads.
#[derive(Debug)]
struct Slot(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Slot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// The TLS side of the listener: an acceptor whose certificate can be reloaded.
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    slot: Arc<Slot>,
    files: TlsConfig,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads the files and builds the acceptor (HTTP/1.1 over ALPN).
    pub fn from_config(config: &TlsConfig) -> Result<Tls, TlsSetupError> {
        let key = certified_key(&config.cert_file, &config.key_file).map_err(TlsSetupError)?;
        let slot = Arc::new(Slot(RwLock::new(Arc::new(key))));
        let mut server = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                TlsSetupError(PemError::Key {
                    path: config.key_file.clone(),
                    detail: format!(": {e}"),
                })
            })?
            .with_no_client_auth()
            .with_cert_resolver(slot.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            slot,
            files: config.clone(),
        })
    }

    /// Re-reads the files; swaps the certificate in only when they parse and match.
    pub fn reload(&self) -> Result<(), PemError> {
        let key = certified_key(&self.files.cert_file, &self.files.key_file)?;
        *self.slot.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// Reloads when the files change (checked every [`POLL`]) or on SIGHUP, until
    /// `shutdown`. A failed reload keeps the certificate in use and is logged once per
    /// change of the files.
    pub fn watch(&self, shutdown: CancellationToken) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut hangup = hangup_signal();
            let mut seen = fingerprint(&tls.files);
            let mut tick = tokio::time::interval(POLL);
            loop {
                let forced = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => false,
                    _ = recv(&mut hangup) => true,
                };
                let now = fingerprint(&tls.files);
                if !forced && now == seen {
                    continue;
                }
                seen = now;
                match tls.reload() {
                    Ok(()) => {
                        tracing::info!(cert = %tls.files.cert_file.display(), sighup = forced, "TLS certificate reloaded")
                    }
                    Err(error) => {
                        tracing::error!(%error, "TLS certificate not reloaded; the previous one stays in use")
                    }
                }
            }
        });
    }
}

type Fingerprint = Vec<Option<(SystemTime, u64)>>;

/// Modification time and length of both files (following symlinks, as Kubernetes
/// secret volumes swap them).
fn fingerprint(files: &TlsConfig) -> Fingerprint {
    let stat = |path: &PathBuf| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    vec![stat(&files.cert_file), stat(&files.key_file)]
}

#[cfg(unix)]
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(error) => {
            tracing::warn!(%error, "no SIGHUP handler; certificates reload on file changes only");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Option<()> {
    None
}

#[cfg(unix)]
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv(_: &mut Option<()>) {
    std::future::pending().await
}

/// Serves `filter` over TLS on `listener` until `signal`, then waits for open
/// connections to finish (WebSockets included, as warp's graceful loop does).
pub async fn serve<F>(
    filter: F,
    listener: TcpListener,
    tls: Tls,
    signal: impl std::future::Future<Output = ()> + Send,
) where
    F: Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let watcher = graceful.watcher();
        let acceptor = tls.acceptor.clone();
        let filter = filter.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return tracing::debug!(%error, %peer, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let service = hyper::service::service_fn(move |mut request| {
                request.extensions_mut().insert(PeerAddr(peer));
                warp::service(filter.clone()).call(request)
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let builder = builder.http1_only();
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, %peer, "TLS connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
