-- portcullis store schema, SQLite flavour. Keep in step with ../postgres/0001_init.sql.
-- Timestamps are RFC 3339 UTC text with millisecond precision in both databases.

CREATE TABLE threads (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL,
    title       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    -- The seq counter lives on the thread row: bumping it is how appenders serialize.
    last_seq    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX threads_by_user ON threads (user_id, updated_at);

CREATE TABLE messages (
    id          TEXT PRIMARY KEY NOT NULL,
    thread_id   TEXT NOT NULL REFERENCES threads (id),
    -- The thread owner; with client_id it is the idempotency key of user messages.
    user_id     TEXT NOT NULL,
    client_id   TEXT,
    role        TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content     TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
-- NULL client ids (assistant messages) never collide.
CREATE UNIQUE INDEX messages_client_id ON messages (user_id, client_id);
-- Thread order is insertion order: the implicit rowid, which this index carries.
CREATE INDEX messages_by_thread ON messages (thread_id);

CREATE TABLE runs (
    id          TEXT PRIMARY KEY NOT NULL,
    thread_id   TEXT NOT NULL REFERENCES threads (id),
    message_id  TEXT NOT NULL,
    agent       TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT
);
-- Boot-time recovery looks only for running runs.
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';

-- No foreign key on thread_id: every insert follows the seq bump on the thread row in
-- the same transaction, which already proves the thread exists.
CREATE TABLE events (
    thread_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    run_id      TEXT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (thread_id, seq)
) WITHOUT ROWID;
