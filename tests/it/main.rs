//! The single integration test binary (one link for the whole suite).

mod auth;
mod store;
mod ws;
