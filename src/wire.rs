//! The `portcullis.v1` protocol as data and text (docs/PROTOCOL.md), so no other module
//! spells it out: the close codes and error codes the server sends, the event kinds and
//! run statuses, what clients send ([`ClientMessage`] and its parser), what the session
//! sends itself ([`server`]), the event body before and after sealing, the sealing that
//! makes the exact JSON text stored and sent, and the JSON writer behind it. The server,
//! the load generator, the tests and client tools all build and read messages from here.
//!
//! Architecture invariant: `wire` sits below `agent`, `store`, `bus`, `hub`, `runs` and
//! `ws`, and imports nothing else from the crate.

mod client;
pub mod close;
mod error;
mod event;
mod json;
mod seal;
pub mod server;

pub use client::{ClientMessage, PROTOCOL, ParseError, parse};
pub use close::CloseCode;
pub use error::ErrorCode;
pub use event::{BodyWriter, EventBody, EventKind, EventRecord, RunStatus, StoredEvent};
pub(crate) use seal::{SealedAround, completed_body, seal, seal_around, seal_json};
