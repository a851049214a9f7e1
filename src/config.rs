//! Configuration: raw file types, loading with provenance, and the validated `Config`.

pub mod raw;
pub mod validated;

pub use validated::*;
