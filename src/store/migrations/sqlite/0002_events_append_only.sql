-- Events become an append-only rowid table. With `(thread_id, seq)` as a clustered
-- WITHOUT ROWID key, every batch of events from concurrent runs touched one table page per
-- thread, and each touched page is a WAL page write. Now the rows land on the table's last
-- page, and only the much smaller key index is spread out. A unique index on
-- `(thread_id, seq)` still refuses a duplicate seq in a thread.
CREATE TABLE events_log (
    thread_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    run_id      TEXT NOT NULL,
    body        TEXT NOT NULL
);
INSERT INTO events_log (thread_id, seq, run_id, body)
    SELECT thread_id, seq, run_id, body FROM events ORDER BY thread_id, seq;
DROP TABLE events;
ALTER TABLE events_log RENAME TO events;
CREATE UNIQUE INDEX events_by_thread ON events (thread_id, seq);
