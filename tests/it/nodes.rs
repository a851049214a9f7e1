//! Several nodes on one store and one Redis (issue 16): in-process servers on port 0 that
//! share a fresh Postgres database and a throwaway `redis-server` the test owns (started on
//! a free port, killed and restarted on the same port for the fault tests). A missing
//! Postgres or `redis-server` fails the tests; nothing is skipped.

mod delivery;
mod faults;
pub mod harness;
