//! `portcullis-fakemodel`: the local OpenAI-compatible model server of the tests
//! (`server.rs`), as a process for the benchmarks. `--listen ADDR` (default
//! `127.0.0.1:0`); prints `listening on http://ADDR/v1` and serves until killed.
//! Scenarios are chosen by the request's `model` (see `server.rs`); `deltas:N` answers at
//! once, which is what `benches/compare.sh` uses.

#[allow(dead_code)]
mod server;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:0".to_string();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDR"),
            other => {
                eprintln!("unknown argument {other}; usage: portcullis-fakemodel [--listen ADDR]");
                std::process::exit(2);
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {listen}: {e}"));
    let model = server::FakeModel::serve(listener);
    println!("listening on {}", model.url());
    std::future::pending::<()>().await;
}
