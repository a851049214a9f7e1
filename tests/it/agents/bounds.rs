//! Issue 13, class 1: the built-in agent's history answer must not feed on itself. Fifty
//! history questions in one thread on the shipped `test` environment (the scripted
//! agent): every answer and every run stays small, and the test prints the process RSS
//! and the database size it ended with.

use crate::ws::harness::TestServer;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes of the database file and of it with its WAL and shared-memory files.
fn db_bytes(dir: &std::path::Path) -> (u64, u64) {
    let size = |name: &str| {
        std::fs::metadata(dir.join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let main = size("ws.db");
    (main, main + size("ws.db-wal") + size("ws.db-shm"))
}

#[tokio::test]
async fn fifty_history_questions_in_one_thread_stay_bounded() {
    let server = TestServer::start(&[]).await;
    let mut c = server.user("alice").await;
    let rss_before = rss_kib();
    let mut thread: Option<String> = None;
    let mut longest = 0;
    let mut most_events = 0;
    for i in 0..50 {
        let ack = c
            .ask_acked(
                &format!("h{i}"),
                &format!("what did I say earlier? ({i})"),
                thread.as_deref(),
            )
            .await;
        thread = ack["thread_id"].as_str().map(String::from);
        let events = c.run_events(ack["run_id"].as_str().unwrap()).await;
        let done = events.last().unwrap();
        assert_eq!(done["status"], "ok", "{done}");
        let answer = done["message"]["content"].as_str().unwrap();
        longest = longest.max(answer.len());
        most_events = most_events.max(events.len());
    }
    let (db_main, db) = db_bytes(server.data_dir());
    println!(
        "50 history questions in one thread: longest answer {longest} B, most events per run {most_events}, \
         database {} KiB ({} KiB with its WAL), process RSS {} KiB (+{} KiB over the run)",
        db_main / 1024,
        db / 1024,
        rss_kib(),
        rss_kib().saturating_sub(rss_before)
    );
    // Ten quoted user messages of at most 80 characters each, plus the sentence.
    assert!(
        longest < 1_200,
        "the history answer grew to {longest} bytes"
    );
    assert!(most_events < 100, "a run emitted {most_events} events");
    // Fifty small runs (the WAL grows to SQLite's ~4 MiB checkpoint size and stays); an
    // answer doubling each time would have filled gigabytes long before the 50th.
    assert!(db < 16 << 20, "the database grew to {db} bytes");
}
