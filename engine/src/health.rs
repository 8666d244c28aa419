//! nsqd's health: the outcome of the last write to disk, as NSQ keeps it (`SetHealth` after every
//! write to its backend). `/ping` answers `NOK - <error>` and `/stats` shows the error while the
//! last write failed; the next write that succeeds makes the engine healthy again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::EngineError;
use crate::log::LogError;
use crate::sync::lock;

#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Whether `error` is set: the hot path reads only this.
    failing: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Health {
    /// Records the outcome of a write. Refusals that are not about the disk (a body too large,
    /// a closing topic) say nothing about health and are ignored.
    pub(crate) fn record<T>(&self, outcome: &Result<T, EngineError>) {
        match outcome {
            Ok(_) => {
                if self.failing.load(Ordering::Acquire) {
                    let mut error = lock(&self.error);
                    *error = None;
                    self.failing.store(false, Ordering::Release);
                }
            }
            Err(error) if is_write_failure(error) => self.failed(error),
            Err(_) => {}
        }
    }

    pub(crate) fn failed(&self, error: &EngineError) {
        let mut slot = lock(&self.error);
        *slot = Some(error.to_string());
        self.failing.store(true, Ordering::Release);
    }

    pub(crate) fn get(&self) -> Option<String> {
        if self.failing.load(Ordering::Acquire) { lock(&self.error).clone() } else { None }
    }
}

fn is_write_failure(error: &EngineError) -> bool {
    match error {
        EngineError::Log(log) => matches!(
            log,
            LogError::Io { .. } | LogError::DiskFull { .. } | LogError::Poisoned { .. }
        ),
        EngineError::Meta(_) | EngineError::Io { .. } => true,
        _ => false,
    }
}
