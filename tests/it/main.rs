//! The single integration test binary (one link for the whole suite).

mod auth;
mod serve;
mod store;
