//! Configuration: raw file types, loading with provenance, and the validated `Config`.

pub mod builtin;
pub mod explain;
pub mod load;
pub mod raw;
pub mod schema;
pub mod source;
pub mod validated;

pub use validated::*;
