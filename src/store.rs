//! The store of record: threads, messages, runs and the ordered event log, on SQLite
//! (embedded default) or Postgres (production), behind one enum.
//!
//! [`Store`] is a shared handle over enum dispatch to the two implementations, so callers
//! hold one concrete, cloneable type with no `async_trait`. Each database keeps its SQL
//! in its own file (`sqlite.rs`, `postgres.rs`) because placeholders, batch inserts and
//! locking differ; what both share (ids, timestamps, titles) is in `model.rs`, and
//! the event text both store is sealed by `crate::wire`. Ownership checks and the text rules (`text.rs`) live here, once, so
//! neither implementation can forget one; so does the list of runs this process
//! abandoned, which `sweep.rs` closes.
//!
//! Architecture invariant: a thread's events get `seq` 1, 2, 3, … with no gap or
//! duplicate, and the JSON text stored is the JSON text sent.
//! Architecture invariant: no store error message contains the connection URL.

mod error;
mod lease;
mod migrations;
mod model;
mod postgres;
mod sqlite;
mod status;
mod sweep;
mod text;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::metrics::{CallTimer, StoreCalls, StoreOp};
use crate::wire::{EventRecord, StoredEvent};

pub use error::StoreError;
pub use lease::{ClosedRun, LeasedRun, Node};
pub use model::{Accepted, MessageRow, NewMessage, ThreadSummary};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use status::{MigrationStatus, migration_status};
pub use sweep::SWEEP_INTERVAL;

/// The store, on one of the two supported databases; clones share it. The databases'
/// own methods are crate-private: callers go through `Store`, which is where ownership
/// is checked.
#[derive(Debug, Clone)]
pub struct Store(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    db: Db,
    /// Runs whose completion could not be stored, until the sweep stores it.
    abandoned: sweep::Abandoned,
    /// Latency histograms, once the process hands them over ([`Store::record_calls`]).
    calls: OnceLock<StoreCalls>,
    /// The node this process is, when several may share the database (`lease.rs`).
    node: Option<Node>,
}

#[derive(Debug)]
enum Db {
    /// A SQLite file (`sqlite://path/to/file.db`).
    Sqlite(SqliteStore),
    /// A Postgres database (`postgres://…` or `postgresql://…`).
    Postgres(PgStore),
}

/// Calls the same method on whichever database this store uses.
macro_rules! dispatch {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match &$self.0.db {
            Db::Sqlite(s) => s.$method($($arg),*).await,
            // Boxed: an enum's future is as large as its largest variant, and sqlx's
            // Postgres futures are kilobytes, which every SQLite call (and every run and
            // message future holding one) would otherwise carry and copy.
            Db::Postgres(s) => Box::pin(s.$method($($arg),*)).await,
        }
    };
}

/// What to do with a write's result, run right after its commit (or failure) by whoever
/// executed it; see [`Store::append_events_then`].
pub type OnCommit<T> = Box<dyn FnOnce(Result<T, StoreError>) + Send + Sync>;

impl Store {
    /// Connects by URL scheme and runs the migrations. `pool_size` caps connections;
    /// `connect_timeout` bounds both the first connection and every later pool checkout.
    pub async fn connect(
        url: &str,
        pool_size: u32,
        connect_timeout: Duration,
    ) -> Result<Store, StoreError> {
        Self::connect_as(url, pool_size, connect_timeout, None).await
    }

    /// [`Store::connect`] as `node`: on Postgres the runs this store starts record the
    /// node and get its lease (`lease.rs`).
    pub async fn connect_node(
        url: &str,
        pool_size: u32,
        connect_timeout: Duration,
        node: Node,
    ) -> Result<Store, StoreError> {
        Self::connect_as(url, pool_size, connect_timeout, Some(node)).await
    }

    async fn connect_as(
        url: &str,
        pool_size: u32,
        connect_timeout: Duration,
        node: Option<Node>,
    ) -> Result<Store, StoreError> {
        // Only the scheme is ever echoed back: the rest may carry a password.
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        // A SQLite file has one node (the validator refuses more): no leases there.
        let node = node.filter(|_| scheme != "sqlite");
        let db = match scheme {
            "sqlite" => Db::Sqlite(SqliteStore::connect(url, pool_size, connect_timeout).await?),
            "postgres" | "postgresql" => Db::Postgres(
                PgStore::connect(url, pool_size, connect_timeout, node.as_ref()).await?,
            ),
            _ => {
                return Err(StoreError::BadUrl(format!(
                    "unsupported scheme {:?}; expected sqlite:// or postgres://",
                    scheme_for_display(scheme)
                )));
            }
        };
        Ok(Store::new(db, node))
    }

    /// The store over `db`, with its sweep (`sweep.rs`) started; it ends with the store.
    fn new(db: Db, node: Option<Node>) -> Store {
        let store = Store(Arc::new(Inner {
            db,
            abandoned: sweep::Abandoned::default(),
            calls: OnceLock::new(),
            node,
        }));
        tokio::spawn(sweep::run(Arc::downgrade(&store.0)));
        store
    }

    /// From now on, every call's duration is recorded in `calls` (`/metrics`).
    pub fn record_calls(&self, calls: StoreCalls) {
        let _ = self.0.calls.set(calls);
    }

    /// Times one call of `op` until the returned guard drops.
    fn timer(&self, op: StoreOp) -> Option<CallTimer> {
        self.0.calls.get().map(|c| c.start(op))
    }

    /// Which database this is (`sqlite` or `postgres`), for logs and readiness output.
    pub fn kind(&self) -> &'static str {
        match self.0.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Whether [`Self::close`] was called.
    fn is_closed(&self) -> bool {
        match &self.0.db {
            Db::Sqlite(s) => s.is_closed(),
            Db::Postgres(s) => s.is_closed(),
        }
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _t = self.timer(StoreOp::Ping);
        dispatch!(self.ping())
    }

    /// Closes the pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        dispatch!(self.close())
    }

    /// Durably stores a user message and starts its run, in one transaction; see
    /// [`Accepted::duplicate`] for repeated client ids.
    /// Text with U+0000 is refused on both databases (`store/text.rs`).
    pub async fn accept_message(&self, msg: NewMessage<'_>) -> Result<Accepted, StoreError> {
        let _t = self.timer(StoreOp::Accept);
        text::check_message(&msg)?;
        dispatch!(self.accept_message(msg))
    }

    /// Appends a batch of events to a thread in one transaction, assigning consecutive
    /// seqs, and returns them as they will be sent. The caller must already have checked
    /// that the thread is the user's (it is, when the run came from [`Self::accept_message`]).
    /// Every event must belong to a running run of that thread: an unknown thread is
    /// [`StoreError::ThreadNotFound`], a run that is not running there (ended, another
    /// thread's, unknown) is [`StoreError::RunNotActive`], and nothing is stored.
    pub async fn append_events(
        &self,
        thread_id: &str,
        events: Vec<EventRecord>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let _t = self.timer(StoreOp::Append);
        text::check_append(thread_id, &events)?;
        dispatch!(self.append_events(thread_id, events))
    }

    /// Appends without waiting: `then` gets the stored events (or the error) right after
    /// the commit. On SQLite the request is queued for the group-commit writer before this
    /// returns; the writer commits queued requests in call order, possibly several in one
    /// transaction, and runs each `then` in that order after the commit, so a thread's
    /// events can be published in seq order straight from there. On Postgres the append
    /// completes, and `then` runs, before this returns (concurrent transactions could
    /// otherwise assign a thread's seqs out of call order). `Err` means the request could
    /// not be queued; `then` is then never called.
    pub async fn append_events_then(
        &self,
        thread_id: &str,
        events: Vec<EventRecord>,
        then: OnCommit<Vec<StoredEvent>>,
    ) -> Result<(), StoreError> {
        let then = self.timed(StoreOp::Append, then);
        if let Err(e) = text::check_append(thread_id, &events) {
            then(Err(e));
            return Ok(());
        }
        match &self.0.db {
            Db::Sqlite(s) => s.append_events_then(thread_id, events, then).await,
            Db::Postgres(s) => {
                then(Box::pin(s.append_events(thread_id, events)).await);
                Ok(())
            }
        }
    }

    /// [`Store::finish_run`] without waiting, like [`Store::append_events_then`]: on
    /// SQLite it is queued behind the run's earlier appends and usually commits in the same
    /// transaction, so a run's events and its end cost one commit.
    pub async fn finish_run_then(
        &self,
        thread_id: &str,
        run_id: &str,
        status: &str,
        assistant_content: &str,
        event: EventRecord,
        then: OnCommit<StoredEvent>,
    ) -> Result<(), StoreError> {
        let then = self.timed(StoreOp::Finish, then);
        if let Err(e) = text::check_finish(thread_id, run_id) {
            then(Err(e));
            return Ok(());
        }
        let assistant_content = &*text::stored_reply(assistant_content);
        match &self.0.db {
            Db::Sqlite(s) => {
                s.finish_run_then(thread_id, run_id, status, assistant_content, event, then)
                    .await
            }
            Db::Postgres(s) => {
                then(
                    Box::pin(s.finish_run(thread_id, run_id, status, assistant_content, event))
                        .await,
                );
                Ok(())
            }
        }
    }

    /// Ends a run atomically: stores the assistant message, records `status`, and appends
    /// the `agent_completed` event. The store sets the event's `type`, `status` and
    /// `message` (`id`, `content`), and `run_id` from the argument; the caller may add
    /// fields such as `error`. U+0000 in the answer is stored as U+FFFD (`store/text.rs`).
    /// A run that is not running (finished, recovered, unknown) is [`StoreError::RunNotActive`].
    pub async fn finish_run(
        &self,
        thread_id: &str,
        run_id: &str,
        status: &str,
        assistant_content: &str,
        event: EventRecord,
    ) -> Result<StoredEvent, StoreError> {
        let _t = self.timer(StoreOp::Finish);
        text::check_finish(thread_id, run_id)?;
        let assistant_content = &*text::stored_reply(assistant_content);
        dispatch!(self.finish_run(thread_id, run_id, status, assistant_content, event))
    }

    /// At boot, closes the runs a crash left `running`, so every replayed `agent_started`
    /// has its end: on SQLite (one node) every running run, with an `INTERRUPTED`
    /// `agent_completed`; on Postgres, shared by nodes, only runs whose lease expired or
    /// that never had one, with `RUN_INTERRUPTED` (`lease.rs`), never another live node's.
    /// Returns what was stored, for publishing.
    pub async fn recover_runs_at_boot(&self) -> Result<Vec<ClosedRun>, StoreError> {
        if let Db::Postgres(_) = &self.0.db {
            return self.close_expired_runs(true).await;
        }
        let mut closed = Vec::new();
        for (run, event) in self.close_open_runs().await? {
            // Boot only, and rare: one owner lookup per run a crash left open.
            let user_id = self.thread_owner(&run.thread_id).await?.unwrap_or_default();
            closed.push(ClosedRun {
                user_id,
                thread_id: run.thread_id,
                event,
            });
        }
        Ok(closed)
    }

    /// Closes every run left `running` with status `error` and an `INTERRUPTED`
    /// `agent_completed`, whatever node it belongs to: only for a store no live node
    /// shares (SQLite, or a test). Returns the events written, in no particular thread
    /// order.
    pub async fn recover_interrupted_runs(&self) -> Result<Vec<StoredEvent>, StoreError> {
        let closed = self.close_open_runs().await?;
        Ok(closed.into_iter().map(|(_, event)| event).collect())
    }

    async fn close_open_runs(&self) -> Result<Vec<(model::OpenRun, StoredEvent)>, StoreError> {
        let open = dispatch!(self.open_runs())?;
        let mut closed = Vec::with_capacity(open.len());
        for run in open {
            let event = model::interrupted_event(&run.run_id);
            match self
                .finish_run(&run.thread_id, &run.run_id, "error", "", event)
                .await
            {
                Ok(stored) => closed.push((run, stored)),
                // Finished by someone else between the scan and now: nothing to do.
                Err(StoreError::RunNotActive) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(closed)
    }

    /// The user's threads, most recently active first.
    pub async fn list_threads(&self, user_id: &str) -> Result<Vec<ThreadSummary>, StoreError> {
        let _t = self.timer(StoreOp::ListThreads);
        if text::has_nul(user_id) {
            // Such a user cannot have sent a message (`accept_message` refuses it).
            return Ok(Vec::new());
        }
        dispatch!(self.list_threads(user_id))
    }

    /// Who owns a thread, or `None` if it does not exist.
    pub async fn thread_owner(&self, thread_id: &str) -> Result<Option<String>, StoreError> {
        let _t = self.timer(StoreOp::ThreadOwner);
        if text::has_nul(thread_id) {
            // No thread id the store makes has one.
            return Ok(None);
        }
        dispatch!(self.thread_owner(thread_id))
    }

    /// Fails with [`StoreError::ThreadNotFound`] unless `user_id` owns the thread.
    async fn check_owner(&self, user_id: &str, thread_id: &str) -> Result<(), StoreError> {
        match self.thread_owner(thread_id).await? {
            Some(owner) if owner == user_id => Ok(()),
            _ => Err(StoreError::ThreadNotFound),
        }
    }

    /// The messages of one of the user's threads, in the order they were stored.
    pub async fn thread_messages(
        &self,
        user_id: &str,
        thread_id: &str,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let _t = self.timer(StoreOp::ThreadMessages);
        self.check_owner(user_id, thread_id).await?;
        dispatch!(self.thread_messages(thread_id))
    }

    /// Up to `limit` stored events of one of the user's threads with `seq > after_seq`,
    /// in seq order: the replay behind `resume` and `?after_seq=`.
    pub async fn events_after(
        &self,
        user_id: &str,
        thread_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let _t = self.timer(StoreOp::EventsAfter);
        self.check_owner(user_id, thread_id).await?;
        dispatch!(self.events_after(thread_id, after_seq, limit))
    }
}

impl Store {
    /// `then`, timed from now until it runs (the commit, for queued writes).
    fn timed<T: 'static>(&self, op: StoreOp, then: OnCommit<T>) -> OnCommit<T> {
        match self.timer(op) {
            Some(timer) => Box::new(move |result| {
                drop(timer);
                then(result)
            }),
            None => then,
        }
    }
}

/// A scheme is echoed in errors only if it looks like one; anything else (such as a
/// URL with no scheme, where the text before `:` could be a user name) is elided.
fn scheme_for_display(scheme: &str) -> &str {
    let plausible = !scheme.is_empty()
        && scheme.len() <= 20
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if plausible { scheme } else { "<invalid>" }
}
