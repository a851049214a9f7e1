//! The `portcullis.v1` protocol as data (docs/PROTOCOL.md): the close codes and error
//! codes the server sends, so no other module writes a code as a literal. It sits below
//! `agent`, `store`, `runs` and `ws`, and depends on none of them.

pub mod close;
mod error;

pub use close::CloseCode;
pub use error::ErrorCode;
