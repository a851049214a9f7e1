//! Process-scope components, built once at boot from the validated configuration and
//! shared by every filter and connection. Nothing in here is per user.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::Config;

/// Everything built once per process.
#[derive(Clone)]
pub struct App {
    /// The validated configuration.
    pub config: Arc<Config>,
    draining: Arc<AtomicBool>,
}

impl App {
    /// Builds the process-scope components.
    pub async fn build(config: Config) -> Result<App, crate::server::ServeError> {
        Ok(App {
            config: Arc::new(config),
            draining: Arc::new(AtomicBool::new(false)),
        })
    }

    /// True once shutdown has begun (`ready` then answers 503).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Marks the process as draining.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}
