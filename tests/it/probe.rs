//! `portcullis probe` (issue 17): against the real server in each broken state the seeds
//! describe, against small deliberately broken servers, and the done-when command
//! against the embedded default through both binaries; `check --online` (`online.rs`).

mod broken;
mod cli;
mod harness;
mod online;
mod real;
