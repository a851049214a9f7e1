//! portcullis: a WebSocket chat gateway whose behaviour is declared per environment in
//! TOML, checked by a validator that refuses to boot a configuration that would fail in
//! front of users.
//!
//! Layers, in the one direction data flows: [`config`] (files -> raw -> validated) ->
//! [`validate`] -> [`compile`] (every component built, the one gate of `check` and
//! `serve`) -> process ([`app`] over [`store`], [`auth`], [`agent`]) -> [`http`] and
//! [`ws`] filters -> sessions -> runs. [`cli`] drives them.

#![deny(unsafe_code)]

pub mod agent;
pub mod app;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod compile;
pub mod config;
pub mod diagnostic;
pub mod http;
pub mod hub;
pub mod keypath;
pub mod metrics;
pub mod online;
pub mod probe;
pub mod proxy;
pub mod ratelimit;
pub mod readiness;
pub mod refusal;
pub mod report;
pub mod runs;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod validate;
pub mod wire;
pub mod ws;
