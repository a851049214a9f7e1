//! Serving a validated configuration: bind the listener ourselves (a taken port is an
//! error message, not a panic), build the filters, run until shutdown, drain.

use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;

/// Why the server could not start.
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
    /// A process-scope component could not be built.
    #[error("cannot start {component}: {message}")]
    Component {
        /// Which component.
        component: &'static str,
        /// Why.
        message: String,
    },
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

/// Builds components, binds and starts serving in the background.
pub async fn start(config: Config) -> Result<Server, ServeError> {
    let addr = config.server.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let app = App::build(config).await?;
    let shutdown = CancellationToken::new();
    let filters = crate::http::filters(app.clone());
    let connecting = app.clone();
    let stop_connecting = shutdown.clone();
    tokio::spawn(async move { connecting.connect_store(stop_connecting).await });
    let token = shutdown.clone();
    let drain_app = app.clone();
    let handle = tokio::spawn(async move {
        let signal_app = drain_app.clone();
        let signal = async move {
            token.cancelled().await;
            signal_app.start_draining();
        };
        warp::serve(filters)
            .incoming(listener)
            .graceful(signal)
            .run()
            .await;
        drain_app.drain().await;
    });
    Ok(Server {
        addr,
        app,
        shutdown,
        handle,
    })
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
