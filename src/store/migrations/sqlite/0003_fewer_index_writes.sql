-- Fewer index pages written per chat run. Every index entry a run changes sits on a page
-- of its own (threads and users are spread over the key space), and each such page is a
-- WAL frame at commit.
-- 1. Assistant messages have no client id; they no longer get an entry in the
--    idempotency index. Lookups by (user_id, client_id = ?) imply client_id IS NOT NULL,
--    so they still use it.
DROP INDEX messages_client_id;
CREATE UNIQUE INDEX messages_client_id ON messages (user_id, client_id)
    WHERE client_id IS NOT NULL;
-- 2. Every run moves its thread's updated_at two or three times (message, events,
--    completion). With updated_at in the key, each move deleted and re-inserted the
--    thread's index entry; listing a user's threads sorts them instead (per user, small).
DROP INDEX threads_by_user;
CREATE INDEX threads_by_user ON threads (user_id);
