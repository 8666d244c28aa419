//! Benchmarks of nsq-rs. The criterion benches of the engine live in `benches/`; results and the
//! commands that made them are in `README.md` beside this crate.

pub mod e2e;
