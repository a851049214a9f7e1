-- Nothing changes on Postgres. SQLite's step 4 (one row per run, and a row of events per
-- run per commit) is about SQLite's WAL: each B-tree page a commit touches is a whole
-- WAL frame. Postgres writes each run in its own transactions, without the group-commit
-- writer, and keeps its layout; both answer the same store calls the same way
-- (tests/it/store runs every case on both). This step exists so that both databases
-- share one version sequence.
SELECT 1;
