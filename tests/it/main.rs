//! The single integration test binary (one link for the whole suite).

mod agents;
mod auth;
mod browser;
mod cluster;
mod config;
mod deploy;
mod layers;
mod nodes;
mod probe;
mod proxy;
mod serve;
mod store;
mod support;
mod tls;
mod wire;
mod ws;
