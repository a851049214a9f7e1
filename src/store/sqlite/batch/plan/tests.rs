//! The plan's stages without a database: what answers the statements would give is
//! written out by hand, and each test checks the rows and outcomes that follow.

use foldhash::{HashMap, HashMapExt};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::{Cursors, Plan, Target, Threads};
use crate::store::error::StoreError;
use crate::store::model::Accepted;
use crate::store::sqlite::request::{Op, Outcome, Reply, Request};
use crate::wire::{EventBody, EventRecord};

fn accept(user: &str, client: &str, thread: Option<&str>) -> Request {
    Request {
        thread_id: String::new(),
        op: Op::Accept {
            user_id: user.into(),
            client_id: client.into(),
            thread_id: thread.map(str::to_string),
            content: format!("  message\n{client}  "),
            agent: "echo".into(),
            reply: oneshot::channel().0,
        },
    }
}

fn record(run: &str) -> EventRecord {
    let mut body = Map::new();
    body.insert("type".into(), Value::from("agent_thinking"));
    EventRecord {
        run_id: run.into(),
        body: EventBody::Map(body),
    }
}

fn append(thread: &str, runs: &[&str]) -> Request {
    Request {
        thread_id: thread.into(),
        op: Op::Append {
            events: runs.iter().map(|r| record(r)).collect(),
            reply: Reply::Wait(oneshot::channel().0),
        },
    }
}

fn finish(thread: &str, run: &str) -> Request {
    Request {
        thread_id: thread.into(),
        op: Op::Finish {
            run_id: run.into(),
            status: "ok".into(),
            content: format!("answer of {run}"),
            event: record(run),
            reply: Reply::Wait(oneshot::channel().0),
        },
    }
}

fn failed(outcome: &Option<Outcome>) -> Option<&StoreError> {
    match outcome {
        Some(Outcome::Failed(e)) => Some(e),
        _ => None,
    }
}

fn not_found(outcome: &Option<Outcome>) -> bool {
    matches!(failed(outcome), Some(StoreError::ThreadNotFound))
}

fn inactive(outcome: &Option<Outcome>) -> bool {
    matches!(failed(outcome), Some(StoreError::RunNotActive))
}

/// The first stage reads only the requests: each key, pair and finish once, a repeated
/// client id set aside to run alone.
#[test]
fn the_first_rows_come_from_the_requests_each_once() {
    let batch = [
        accept("alice", "c1", None),
        accept("alice", "c1", Some("t_a")),
        accept("bob", "c1", None),
        append("t_a", &["r_1", "r_1", "r_2"]),
        append("t_a", &["r_1"]),
        finish("t_a", "r_1"),
        finish("t_a", "r_1"),
        finish("t_b", "r_1"),
    ];
    let plan = Plan::new(&batch);
    assert_eq!(plan.keys, [("alice", "c1"), ("bob", "c1")]);
    assert!(matches!(plan.outcomes[1], Some(Outcome::Alone)));
    assert_eq!(plan.live.list, [("r_1", "t_a"), ("r_2", "t_a")]);
    let finishes: Vec<_> = plan.finishes.list.iter().map(|f| (f.0, f.1, f.4)).collect();
    assert_eq!(
        finishes,
        [
            ("r_1", "t_a", "answer of r_1"),
            ("r_1", "t_b", "answer of r_1")
        ]
    );
    assert_ne!(
        plan.finishes.list[0].3, plan.finishes.list[1].3,
        "reply ids"
    );
    assert!(
        plan.outcomes
            .iter()
            .enumerate()
            .all(|(i, o)| o.is_none() || i == 1)
    );
}

/// Stored client ids are answered; the others touch each existing thread once or get a
/// new thread titled from their content; what the statements return places them.
#[test]
fn new_messages_find_or_create_their_threads() {
    let batch = [
        accept("alice", "stored", None),
        accept("alice", "n1", Some("t_a")),
        accept("alice", "n2", Some("t_a")),
        accept("alice", "n3", None),
        accept("mallory", "n4", Some("t_a")),
    ];
    let mut plan = Plan::new(&batch);
    let seen = Accepted {
        thread_id: "t_old".into(),
        message_id: "m_old".into(),
        run_id: "r_old".into(),
        duplicate: true,
    };
    let known = HashMap::from_iter([(("alice".to_string(), "stored".to_string()), seen.clone())]);
    let threads: Threads<'_> = plan.threads(known);
    assert!(matches!(&plan.outcomes[0], Some(Outcome::Accepted(a)) if *a == seen));
    assert_eq!(threads.touch, [("t_a", "alice"), ("t_a", "mallory")]);
    assert_eq!(threads.create.len(), 1);
    let (new_id, user, title) = &threads.create[0];
    assert!(new_id.starts_with("t_"), "{new_id}");
    assert_eq!((*user, title.as_str()), ("alice", "message n3"));
    // Only alice's thread A was touched (mallory's key matched no row).
    let touched = HashMap::from_iter([(("t_a".to_string(), "alice".to_string()), 7)]);
    let created = HashMap::from_iter([(new_id.clone(), 8)]);
    let new_id = new_id.clone();
    let placed = plan.place(threads, touched, created).expect("placed");
    assert_eq!(placed.get(&1), Some(&("t_a".to_string(), 7)));
    assert_eq!(placed.get(&2), Some(&("t_a".to_string(), 7)));
    assert_eq!(placed.get(&3), Some(&(new_id, 8)));
    assert!(not_found(&plan.outcomes[4]), "{:?}", plan.outcomes[4]);
    assert_eq!(placed.len(), 3);
}

/// A thread the insert did not return means the database disagrees with itself: the
/// whole batch fails (and is retried request by request).
#[test]
fn a_new_thread_that_was_not_created_fails_the_batch() {
    let batch = [accept("alice", "n1", None)];
    let mut plan = Plan::new(&batch);
    let threads = plan.threads(HashMap::new());
    let result = plan.place(threads, HashMap::new(), HashMap::new());
    assert!(matches!(result, Err(StoreError::Database(_))));
}

/// Seqs are counted per thread in request order; requests that cannot write reserve
/// nothing: an unknown thread (`ThreadNotFound` wins over a run that is not running), a
/// run that is not running, a second finish, and an append after its run's end.
#[test]
fn only_writes_that_can_succeed_need_seqs() {
    let batch = [
        append("t_a", &["r_a", "r_a"]),   // 0: ok, 2 seqs
        append("t_x", &["r_a"]),          // 1: unknown thread
        append("t_a", &["r_a", "r_old"]), // 2: r_old is not running
        append("t_b", &["r_b"]),          // 3: ok
        finish("t_a", "r_a"),             // 4: ok, closed
        finish("t_a", "r_a"),             // 5: the same run again
        append("t_a", &["r_a"]),          // 6: after its end
        finish("t_b", "r_old"),           // 7: the close found nothing
        append("t_a", &[]),               // 8: nothing to store, still reserves
    ];
    let mut plan = Plan::new(&batch);
    let live = |run, thread| plan.live.get(&(run, thread)).expect("pair");
    let mut targets = vec![Target::NoThread; plan.live.list.len()];
    targets[live("r_a", "t_a")] = Target::Running(1);
    targets[live("r_old", "t_a")] = Target::NotRunning;
    targets[live("r_b", "t_b")] = Target::Running(2);
    let closed = vec![Some(1), None];
    let needs = plan.needs(&targets, closed);
    assert_eq!(needs.threads.list, [("t_a", 3), ("t_b", 1)]);
    assert!(not_found(&plan.outcomes[1]));
    assert!(inactive(&plan.outcomes[2]));
    assert!(inactive(&plan.outcomes[5]));
    assert!(inactive(&plan.outcomes[6]));
    assert!(inactive(&plan.outcomes[7]));
    for i in [0, 3, 4, 8] {
        assert!(plan.outcomes[i].is_none(), "{i}: {:?}", plan.outcomes[i]);
    }
    assert_eq!(needs.first_seq("t_a", 10).expect("t_a"), 8);
    assert!(matches!(
        needs.first_seq("t_x", 10),
        Err(StoreError::Database(_))
    ));
}

/// Seqs follow request order within each thread's range; a run's consecutive events,
/// its completion included, share one event row, and a gap starts a new one.
#[test]
fn events_take_consecutive_seqs_and_share_their_runs_row() {
    let batch = [
        accept("alice", "n1", Some("t_a")),
        append("t_a", &["r_a", "r_a"]),
        append("t_b", &["r_b"]),
        append("t_a", &["r_a"]),
        finish("t_a", "r_a"),
        append("t_b", &["r_b"]),
    ];
    let mut plan = Plan::new(&batch);
    let threads = plan.threads(HashMap::new());
    let touched = HashMap::from_iter([(("t_a".to_string(), "alice".to_string()), 5)]);
    let placed = plan
        .place(threads, touched, HashMap::new())
        .expect("placed");
    let targets = vec![Target::Running(11), Target::Running(12)];
    let needs = plan.needs(&targets, vec![Some(11)]);
    let cursors = Cursors::from_iter([("t_a".to_string(), 3), ("t_b".to_string(), 20)]);
    let writes = plan
        .assign(&placed, cursors, &targets, &needs)
        .expect("assigned");
    assert_eq!(writes.runs.len(), 1);
    assert_eq!(
        (writes.runs[0].thread_no, writes.runs[0].client_id),
        (5, "n1")
    );
    let rows: Vec<_> = writes
        .events
        .rows
        .iter()
        .map(|r| (r.run_no, r.first_seq, r.last_seq, r.body.lines().count()))
        .collect();
    assert_eq!(rows, [(11, 3, 6, 4), (12, 20, 21, 2)]);
    let reply_id = plan.finishes.list[0].3.clone();
    let outcomes = plan.into_outcomes();
    let seqs = |o: &Outcome| match o {
        Outcome::Appended(v) => v.iter().map(|e| e.seq).collect::<Vec<_>>(),
        Outcome::Finished(e) => vec![e.seq],
        other => panic!("{other:?}"),
    };
    assert!(matches!(&outcomes[0], Outcome::Accepted(a) if a.thread_id == "t_a" && !a.duplicate));
    assert_eq!(seqs(&outcomes[1]), [3, 4]);
    assert_eq!(seqs(&outcomes[2]), [20]);
    assert_eq!(seqs(&outcomes[3]), [5]);
    assert_eq!(seqs(&outcomes[4]), [6]);
    assert_eq!(seqs(&outcomes[5]), [21]);
    let Outcome::Finished(done) = &outcomes[4] else {
        unreachable!()
    };
    let v: Value = serde_json::from_str(&done.json).expect("json");
    assert_eq!(v["type"], "agent_completed");
    assert_eq!(v["message"]["content"], "answer of r_a");
    assert_eq!(v["message"]["id"].as_str(), Some(reply_id.as_str()));
}

/// A run's event row restarts when its seqs do not follow on (another run's events in
/// between), so each row still holds one consecutive range.
#[test]
fn a_gap_in_a_runs_seqs_starts_a_new_row() {
    let batch = [
        append("t_a", &["r_a"]),
        append("t_a", &["r_b"]),
        append("t_a", &["r_a"]),
    ];
    let mut plan = Plan::new(&batch);
    let targets = vec![Target::Running(1), Target::Running(2)];
    let needs = plan.needs(&targets, Vec::new());
    let cursors = Cursors::from_iter([("t_a".to_string(), 1)]);
    let writes = plan
        .assign(&HashMap::new(), cursors, &targets, &needs)
        .expect("assigned");
    let rows: Vec<_> = writes
        .events
        .rows
        .iter()
        .map(|r| (r.run_no, r.first_seq, r.last_seq))
        .collect();
    assert_eq!(rows, [(1, 1, 1), (2, 2, 2), (1, 3, 3)]);
}

/// A thread the reserve did not return: its appends are `ThreadNotFound`, but a run
/// just closed there means the database disagrees with itself, so the batch fails.
#[test]
fn a_thread_without_a_reserved_range() {
    let batch = [append("t_a", &["r_a"])];
    let mut plan = Plan::new(&batch);
    let targets = vec![Target::Running(1)];
    let needs = plan.needs(&targets, Vec::new());
    plan.assign(&HashMap::new(), Cursors::new(), &targets, &needs)
        .expect("assigned");
    assert!(matches!(
        &plan.into_outcomes()[0],
        Outcome::Failed(StoreError::ThreadNotFound)
    ));

    let batch = [finish("t_a", "r_a")];
    let mut plan = Plan::new(&batch);
    let needs = plan.needs(&[], vec![Some(1)]);
    let result = plan.assign(&HashMap::new(), Cursors::new(), &[], &needs);
    assert!(matches!(result, Err(StoreError::Database(_))));
}
