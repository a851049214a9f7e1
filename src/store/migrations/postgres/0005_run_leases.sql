-- Runs across nodes: every run records the node that executes it and a lease that node
-- renews while the run runs; any node closes a run whose lease expired (its node died)
-- as RUN_INTERRUPTED. A `cancel` received by another node sets `cancel_requested`, which
-- the executing node reads when it renews.
--
-- The node id and the lease length come from settings each node's connections carry
-- (`portcullis.node_id`, `portcullis.run_lease_ms`, sent in the startup packet, so they
-- cost no round trip): the statements that insert runs need not know about leases. Lease
-- times are the database's clock in epoch milliseconds, so nodes' clocks never meet.
-- Rows inserted without those settings (an older binary, a tool) get NULL: such a run is
-- closed at the next boot of a node, as every running run was before this step.
ALTER TABLE runs
    ADD COLUMN node_id TEXT DEFAULT NULLIF(current_setting('portcullis.node_id', true), ''),
    ADD COLUMN lease_until BIGINT DEFAULT
        (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT
        + NULLIF(current_setting('portcullis.run_lease_ms', true), '')::BIGINT,
    ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false,
    -- Accept order of runs (a thread's runs are accepted under its row lock, so this is
    -- their message order): a run takes its turn when no earlier run of its thread runs.
    ADD COLUMN turn BIGINT GENERATED ALWAYS AS IDENTITY;
