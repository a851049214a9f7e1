-- SQLite-only layout change (see the SQLite migration of the same number): Postgres
-- tables are heaps, already append-only, with the primary key as a separate index.
SELECT 1;
