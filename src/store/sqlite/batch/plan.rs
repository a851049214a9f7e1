//! What one group-commit batch writes, worked out without SQLite: which rows each of the
//! batch's statements gets, and each request's outcome.
//!
//! The plan is staged because some rows depend on what earlier statements answered (a
//! stored client id needs no thread; an append to a run that is not running reserves no
//! seq). [`Plan::new`] reads only the requests; each later stage takes the answers of
//! the statements before it (`steps.rs` runs them) and returns the next statement's rows.
//! Every stage is pure, so the bookkeeping is unit-tested without a database
//! (`plan/tests.rs`).

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::store::error::StoreError;
use crate::store::model::{Accepted, new_id, title_from};
use crate::store::sqlite::request::{Op, Outcome, Request};
use crate::wire::StoredEvent;

mod seqs;
#[cfg(test)]
mod tests;

/// Two strings that name one thing together: (user id, client id) or (run id, thread id).
pub(super) type Pair<'a> = (&'a str, &'a str);

/// What the check of running runs found for a (run, thread) pair of the appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    NoThread,
    NotRunning,
    /// The run's `no`.
    Running(i64),
}

/// A run being finished: (run id, thread id, status, reply id, reply).
pub(super) type Finish<'a> = (&'a str, &'a str, &'a str, String, &'a str);

/// Items asked for once each, in the order first asked, with their positions.
pub(super) struct Unique<K, V> {
    pub list: Vec<V>,
    index: HashMap<K, usize>,
}

impl<K: std::hash::Hash + Eq, V> Default for Unique<K, V> {
    fn default() -> Self {
        Self {
            list: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq, V> Unique<K, V> {
    /// The position of `key`, adding `make()` for it if it is new.
    fn add(&mut self, key: K, make: impl FnOnce() -> V) -> usize {
        *self.index.entry(key).or_insert_with(|| {
            self.list.push(make());
            self.list.len() - 1
        })
    }

    /// The position of `key`, if it was asked for.
    pub fn get(&self, key: &K) -> Option<usize> {
        self.index.get(key).copied()
    }
}

/// The batch, what its first statements need, and the outcomes learnt so far.
pub(super) struct Plan<'a> {
    batch: &'a [Request],
    outcomes: Vec<Option<Outcome>>,
    /// (user id, client id) of the new messages to look up, each once.
    pub keys: Vec<Pair<'a>>,
    /// The request index of each of `keys`.
    accepts: Vec<usize>,
    /// (run id, thread id) of every append, for the check of running runs.
    pub live: Unique<Pair<'a>, Pair<'a>>,
    /// The runs to close, once per (run id, thread id): only a pair's first request may
    /// succeed.
    pub finishes: Unique<Pair<'a>, Finish<'a>>,
}

/// The threads of new messages: rows for the touch and insert statements.
pub(super) struct Threads<'a> {
    /// (thread id, user id) of existing threads, each once.
    pub touch: Vec<Pair<'a>>,
    /// (id, user id, title) of the threads to create.
    pub create: Vec<(String, &'a str, String)>,
    /// The new thread of each request that names none.
    new_thread_of: HashMap<usize, String>,
}

/// The thread (id, `no`) of each new message that gets a run, by request index.
pub(super) type Placed = HashMap<usize, (String, i64)>;

/// Seqs each thread needs, in request order, for the reserve statement.
pub(super) struct Needs<'a> {
    pub threads: Unique<&'a str, (&'a str, i64)>,
    /// The `no` of the run each of `finishes` ended (for its completion's event row).
    finished_no: Vec<Option<i64>>,
}

impl Needs<'_> {
    /// The first seq of `thread_id`'s range, from the thread's `last_seq` after the bump.
    pub fn first_seq(&self, thread_id: &str, last_seq: i64) -> Result<i64, StoreError> {
        let count = self
            .threads
            .get(&thread_id)
            .map(|i| self.threads.list[i].1)
            .ok_or_else(|| StoreError::Database("seq reserved for an unknown thread".into()))?;
        Ok(last_seq - count + 1)
    }
}

/// A thread's next seq within the range reserved for this batch, by thread id.
pub(super) type Cursors = HashMap<String, i64>;

/// A run row of a new message.
pub(super) struct RunRow<'a> {
    pub id: String,
    pub thread_no: i64,
    pub user_id: &'a str,
    pub client_id: &'a str,
    pub message_id: String,
    pub content: &'a str,
    pub agent: &'a str,
}

/// A run's consecutive events of one batch, as one row: their JSON texts joined by
/// newlines. Compact JSON never contains a newline of its own (strings escape it), so
/// the reader splits the text back exactly (`read.rs`; a test in `model.rs` checks
/// every kind of event).
pub(super) struct EventRow {
    pub run_no: i64,
    pub first_seq: i64,
    pub last_seq: i64,
    pub body: String,
}

impl EventRow {
    fn new(run_no: i64, event: &StoredEvent) -> Self {
        // Room for a scripted run's six events without growing.
        let mut body = String::with_capacity(event.json.len().max(1536));
        body.push_str(&event.json);
        Self {
            run_no,
            first_seq: event.seq,
            last_seq: event.seq,
            body,
        }
    }

    fn push(&mut self, event: &StoredEvent) {
        self.body.push('\n');
        self.body.push_str(&event.json);
        self.last_seq = event.seq;
    }
}

/// The event rows of a batch, one per run while its events are consecutive (they are:
/// its thread's other runs wait for their turn).
#[derive(Default)]
pub(super) struct EventRows {
    pub rows: Vec<EventRow>,
    row_of_run: HashMap<i64, usize>,
}

impl EventRows {
    fn add(&mut self, run_no: i64, event: &StoredEvent) {
        match self.row_of_run.get(&run_no).map(|&i| &mut self.rows[i]) {
            Some(row) if row.last_seq + 1 == event.seq => row.push(event),
            _ => {
                self.row_of_run.insert(run_no, self.rows.len());
                self.rows.push(EventRow::new(run_no, event));
            }
        }
    }
}

/// The rows of the last two statements.
#[derive(Default)]
pub(super) struct Writes<'a> {
    pub runs: Vec<RunRow<'a>>,
    pub events: EventRows,
}

impl<'a> Plan<'a> {
    /// Reads the requests: the keys to look up (a client id repeated within the batch
    /// runs alone afterwards, and then finds the first), the appends' (run, thread)
    /// pairs, and the runs to close, each with a new reply id.
    pub fn new(batch: &'a [Request]) -> Self {
        let mut plan = Plan {
            batch,
            outcomes: batch.iter().map(|_| None).collect(),
            keys: Vec::new(),
            accepts: Vec::new(),
            live: Unique::default(),
            finishes: Unique::default(),
        };
        let mut key_seen = HashSet::new();
        for (i, request) in batch.iter().enumerate() {
            let thread_id = request.thread_id.as_str();
            match &request.op {
                Op::Accept {
                    user_id, client_id, ..
                } => {
                    if key_seen.insert((user_id.as_str(), client_id.as_str())) {
                        plan.keys.push((user_id, client_id));
                        plan.accepts.push(i);
                    } else {
                        plan.outcomes[i] = Some(Outcome::Alone);
                    }
                }
                Op::Append { events, .. } => {
                    for record in events {
                        let pair = (record.run_id.as_str(), thread_id);
                        plan.live.add(pair, || pair);
                    }
                }
                Op::Finish {
                    run_id,
                    status,
                    content,
                    ..
                } => {
                    let pair = (run_id.as_str(), thread_id);
                    let finish = || (pair.0, pair.1, status.as_str(), new_id("m"), &**content);
                    plan.finishes.add(pair, finish);
                }
            }
        }
        plan
    }

    /// Answers the new messages whose client id is stored (`known`, from the lookup) and
    /// lists the threads the others go to: existing ones to touch (and check to be the
    /// user's), new ones to create.
    pub fn threads(&mut self, mut known: HashMap<(String, String), Accepted>) -> Threads<'a> {
        let mut threads = Threads {
            touch: Vec::new(),
            create: Vec::new(),
            new_thread_of: HashMap::new(),
        };
        let mut asked_touch = HashSet::new();
        for &i in &self.accepts {
            let Op::Accept {
                user_id,
                client_id,
                thread_id,
                content,
                ..
            } = &self.batch[i].op
            else {
                continue;
            };
            if let Some(seen) = known.remove(&(user_id.clone(), client_id.clone())) {
                self.outcomes[i] = Some(Outcome::Accepted(seen));
                continue;
            }
            match thread_id {
                Some(id) => {
                    if asked_touch.insert((id.as_str(), user_id.as_str())) {
                        threads.touch.push((id, user_id));
                    }
                }
                None => {
                    let id = new_id("t");
                    threads.new_thread_of.insert(i, id.clone());
                    threads.create.push((id, user_id, title_from(content)));
                }
            }
        }
        threads
    }

    /// The thread of every new message still unanswered, from the threads the touch
    /// (`(thread id, user id)` → `no`) and the insert (`id` → `no`) returned. A thread
    /// that is missing or someone else's answers `ThreadNotFound`.
    pub fn place(
        &mut self,
        mut threads: Threads<'a>,
        touched: HashMap<(String, String), i64>,
        created: HashMap<String, i64>,
    ) -> Result<Placed, StoreError> {
        let mut placed = Placed::new();
        for &i in &self.accepts {
            if self.outcomes[i].is_some() {
                continue;
            }
            let Op::Accept {
                user_id, thread_id, ..
            } = &self.batch[i].op
            else {
                continue;
            };
            let found = match (thread_id, threads.new_thread_of.remove(&i)) {
                (_, Some(id)) => created.get(&id).map(|&no| (id, no)),
                (Some(id), None) => touched
                    .get(&(id.clone(), user_id.clone()))
                    .map(|&no| (id.clone(), no)),
                (None, None) => None,
            };
            match found {
                Some(thread) => {
                    placed.insert(i, thread);
                }
                None if thread_id.is_some() => {
                    self.outcomes[i] = Some(Outcome::Failed(StoreError::ThreadNotFound));
                }
                None => return Err(StoreError::Database("a new thread was not created".into())),
            }
        }
        Ok(placed)
    }
}
