//! The queueing state of channels, and the engine's timer.

pub(crate) mod flights;
pub(crate) mod ranges;
pub(crate) mod state;
pub(crate) mod timers;
