//! The WebSocket endpoint over real sockets, checked against PROTOCOL.md: a server per
//! test on port 0 with its own SQLite file, and a small client ([`harness`]).

mod auth;
mod conversation;
mod frames;
pub mod harness;
mod lifecycle;
mod limits;
mod load;
mod metrics;
mod refusals;
mod resume;
pub mod tool_servers;
mod tools;
mod tools_model;
