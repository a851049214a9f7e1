//! Small helpers every group of the suite uses.

/// A local port that was free a moment ago: for a server that must know its address
/// before it binds, or for an address nothing listens on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Compiles environment `env` as `serve` does and starts the server in this process;
/// panics with the validator's report when the environment does not compile.
pub async fn serve(
    opts: &portcullis::config::load::LoadOptions,
    env: &str,
) -> portcullis::server::Server {
    let outcome = portcullis::compile::compile(opts, env);
    let compiled = outcome.compiled.unwrap_or_else(|| {
        panic!(
            "environment `{env}` does not compile:\n{}",
            portcullis::report::human(&outcome.report)
        )
    });
    portcullis::server::start(compiled)
        .await
        .expect("server starts")
}

/// Waits (at most 10 s) until `server`'s store is connected (it connects in the
/// background after boot).
pub async fn store_connected(server: &portcullis::server::Server) {
    let started = tokio::time::Instant::now();
    while server.app.store.get().is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "store never connected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
