//! portcullis: a WebSocket chat gateway whose behaviour is declared per environment in
//! TOML, checked by a validator that refuses to boot a configuration that would fail in
//! front of users.
//!
//! Layers, in the one direction data flows: [`config`] (files -> raw -> validated) ->
//! [`validate`] -> components ([`store`], [`auth`], [`agent`], [`bus`]) -> [`http`] and
//! [`ws`] filters -> sessions -> runs. [`cli`] drives them.

pub mod agent;
pub mod auth;
pub mod config;
pub mod store;
