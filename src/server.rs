//! Serving a validated configuration: bind the listener ourselves (a taken port is an
//! error message, not a panic), build the filters, run until shutdown, drain.
//!
//! The listener carries `TCP_NODELAY`, which Linux copies onto every accepted socket
//! (warp's acceptor sets no socket options). Without it Nagle's algorithm holds a burst's
//! second write until the client's delayed ACK, about 40 ms, on every run.

use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod tls;

use crate::app::App;
use crate::compile::Compiled;

/// Why the server could not start (configuration problems never get here: `compile`
/// refused them before).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error(
        "cannot listen on {addr}: {source}. Another process may hold the port: stop it, or set server.listen (or PORTCULLIS_SERVER__LISTEN) to a free address"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// `[server.tls]` could not be loaded (the validator checks the same files; this is a
    /// change between `check` and `serve`).
    #[error("cannot start TLS: {0}")]
    Tls(#[from] tls::TlsSetupError),
    /// The configuration was compiled with `--no-env`, which only `check` may use.
    #[error("a configuration checked with --no-env has unset secrets and cannot be served")]
    NotServable,
}

/// A running server.
pub struct Server {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The process-scope components.
    pub app: App,
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

impl Server {
    /// Begins graceful shutdown.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A token that is cancelled when shutdown begins.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) {
        let _ = self.handle.await;
    }
}

/// Binds and starts serving the compiled components in the background.
pub async fn start(compiled: Compiled) -> Result<Server, ServeError> {
    if compiled.config.no_env {
        return Err(ServeError::NotServable);
    }
    let (listener, addr) = bind(compiled.config.server.listen).await?;
    let tls = compiled
        .config
        .server
        .tls
        .as_ref()
        .map(tls::Tls::from_config)
        .transpose()?;
    let app = App::new(compiled);
    let shutdown = CancellationToken::new();
    let filters = crate::http::filters(app.clone());
    let connecting = app.clone();
    let stop_connecting = shutdown.clone();
    app.start(shutdown.clone());
    tokio::spawn(async move { connecting.connect_store(stop_connecting).await });
    let token = shutdown.clone();
    let stop_watching = shutdown.clone();
    let drain_app = app.clone();
    let handle = tokio::spawn(async move {
        let signal_app = drain_app.clone();
        let signal = async move {
            token.cancelled().await;
            signal_app.start_draining();
        };
        match tls {
            Some(tls) => {
                tls.watch(stop_watching);
                tls::serve(filters, listener, tls, signal).await
            }
            None => {
                warp::serve(filters)
                    .incoming(listener)
                    .graceful(signal)
                    .run()
                    .await
            }
        }
        drain_app.drain().await;
    });
    Ok(Server {
        addr,
        app,
        shutdown,
        handle,
    })
}

/// Binds `addr` with `TCP_NODELAY` on the listener, so every accepted socket has it too.
/// Returns the listener and its bound address (the real port when `addr` asked for 0).
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let bind_err = |source| ServeError::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_err)?;
    socket2::SockRef::from(&listener)
        .set_tcp_nodelay(true)
        .map_err(bind_err)?;
    let bound = listener.local_addr().map_err(bind_err)?;
    Ok((listener, bound))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert_ne!(addr.port(), 0, "the bound port is reported");
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "an accepted socket without TCP_NODELAY waits ~40 ms for delayed ACKs"
        );
        drop(client);
    }

    #[tokio::test]
    async fn a_taken_port_is_a_bind_error_naming_the_address() {
        let (_held, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let err = bind(addr).await.unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        assert!(err.to_string().contains("server.listen"), "{err}");
    }
}
