-- One row per run, its events in few rows beside it: a chat run writes one thread-keyed index
-- entry instead of eight.
--
-- Every index keyed by thread puts each active thread's newest entries on a leaf page of
-- their own, and every such page is a WAL frame (4 KiB, checksummed, fsynced, later
-- checkpointed) at each commit. Per chat run the old layout wrote six entries into
-- `events_by_thread` and two into `messages_by_thread`: 1.9 of the 3.5 WAL frames a run
-- cost (docs/PERFORMANCE.md item 9 has the frame counts). Now:
-- * `runs` holds the user's message, the run and the assistant's reply (columns `reply_id`,
--   `reply`), so a run is one row, inserted when the message is accepted and updated when
--   the run ends. A thread's messages are its runs in order (`runs_by_thread`, keyed by
--   the thread's integer `no`: one small entry per run).
-- * `events` holds one row per run per commit: the run's consecutive events of that
--   commit, their JSON texts joined by newlines (compact JSON has none of its own), with
--   the run's integer `no` and the first and last seq. A scripted chat run is one row
--   instead of six. The table is append-only (rowid order is commit order, so inserts go
--   to its last page, where SQLite splits a full page cheaply) and indexed by
--   `(run_no, last_seq)`: small integer entries near the index's end. A thread's events
--   are found through its runs. (Clustering events by `(run_id, seq)`, measured first,
--   inserted into the middle of the last pages: runs finish in another order than they
--   start, and a split there moves half a page of ~250-byte rows.)
-- * `threads` gets an integer key (`no`) for `runs_by_thread` to point at.
-- Seqs stay gap-free and unique per thread: the writer reserves them by bumping
-- `threads.last_seq` in the same transaction (there is no longer an index that would
-- also refuse a duplicate; one would put the spread-out entries back).
-- No foreign keys: every run row is inserted with the `no` of a thread row the same
-- transaction has just created or updated, and immediate foreign keys made every insert
-- keep a statement journal.

CREATE TABLE threads_v4 (
    no          INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL,
    title       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    last_seq    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO threads_v4 (id, user_id, title, created_at, updated_at, last_seq)
    SELECT id, user_id, title, created_at, updated_at, last_seq FROM threads ORDER BY rowid;

CREATE TABLE runs_v4 (
    no          INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    thread_no   INTEGER NOT NULL,
    -- The thread owner; with client_id it is the idempotency key of user messages.
    user_id     TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    -- The user's message.
    message_id  TEXT NOT NULL,
    content     TEXT NOT NULL,
    agent       TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    -- The assistant's message, stored when the run ends.
    reply_id    TEXT,
    reply       TEXT,
    finished_at TEXT
);
-- Every user message started exactly one run; the assistant message (if any) ended it.
INSERT INTO runs_v4 (id, thread_no, user_id, client_id, message_id, content, agent, status,
                     started_at, reply_id, reply, finished_at)
    SELECT r.id, t.no, u.user_id, u.client_id, u.id, u.content, r.agent, r.status,
           r.started_at, a.id, a.content, r.finished_at
    FROM messages u
    JOIN runs r ON r.id = u.run_id
    JOIN threads_v4 t ON t.id = r.thread_id
    LEFT JOIN messages a ON a.run_id = r.id AND a.role = 'assistant'
    WHERE u.role = 'user'
    ORDER BY u.rowid;

CREATE TABLE events_v4 (
    run_no      INTEGER NOT NULL,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    -- The events with seq first_seq, first_seq + 1, …, last_seq, one JSON text a line.
    body        TEXT NOT NULL
);
INSERT INTO events_v4 (run_no, first_seq, last_seq, body)
    SELECT r.no, e.seq, e.seq, e.body FROM events e JOIN runs_v4 r ON r.id = e.run_id
    ORDER BY e.rowid;

-- Nothing may be lost in the move: a mismatch fails this CHECK, and the migration
-- (one transaction) rolls back with the old tables untouched.
CREATE TEMP TABLE migration_0004_check (moved INTEGER NOT NULL CHECK (moved = 1));
INSERT INTO migration_0004_check SELECT
    (SELECT count(*) FROM runs) = (SELECT count(*) FROM runs_v4)
    AND (SELECT count(*) FROM messages) =
        (SELECT count(*) FROM runs_v4) + (SELECT count(*) FROM runs_v4 WHERE reply_id IS NOT NULL)
    AND (SELECT count(*) FROM events) = (SELECT count(*) FROM events_v4)
    AND (SELECT count(*) FROM events e JOIN runs r ON r.id = e.run_id AND r.thread_id = e.thread_id)
        = (SELECT count(*) FROM events);
DROP TABLE migration_0004_check;

DROP TABLE events;
DROP TABLE messages;
DROP TABLE runs;
DROP TABLE threads;
ALTER TABLE threads_v4 RENAME TO threads;
ALTER TABLE runs_v4 RENAME TO runs;
ALTER TABLE events_v4 RENAME TO events;

CREATE INDEX threads_by_user ON threads (user_id);
CREATE INDEX runs_by_thread ON runs (thread_no);
CREATE UNIQUE INDEX events_by_run ON events (run_no, last_seq);
CREATE UNIQUE INDEX runs_client_id ON runs (user_id, client_id);
-- Boot-time recovery looks only for running runs.
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';
