-- Nothing changes on SQLite. Postgres's step 5 (each run's node, lease and cancel flag)
-- is for several nodes sharing one database; a SQLite file has one node by construction
-- (the validator refuses `server.nodes` above 1 with SQLite, and only the group writer's
-- connection writes), so every `running` run found at boot was left by a crash of this
-- node and is closed then. This step keeps both databases on one version sequence.
SELECT 1;
