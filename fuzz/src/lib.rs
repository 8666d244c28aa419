//! The code of nsq-rs's fuzz targets, one module per target (`fuzz_targets/<name>.rs` calls
//! `<name>::run`). Each `run` takes arbitrary bytes, feeds them to the project's own decoders,
//! parsers or engine, and panics only when a property the project promises is broken; see
//! `README.md` for what each target checks.
//!
//! Every target bounds its own work: inputs over its `MAX_LEN` are ignored, and counts, sizes
//! and loops are capped, so no input can make a target hang or allocate without bound.

pub mod checkpoint_value;
pub mod engine_ops;
pub mod lookupd_command;
pub mod record_frame;
pub mod segment_recovery;
pub mod v2_command;

/// The targets, by name, with the longest input each takes (the run script's `-max_len`).
pub const TARGETS: [(&str, usize); 6] = [
    ("record_frame", record_frame::MAX_LEN),
    ("segment_recovery", segment_recovery::MAX_LEN),
    ("checkpoint_value", checkpoint_value::MAX_LEN),
    ("v2_command", v2_command::MAX_LEN),
    ("lookupd_command", lookupd_command::MAX_LEN),
    ("engine_ops", engine_ops::MAX_LEN),
];

/// Runs the target `name` on one input; `false` if there is no such target.
pub fn run_target(name: &str, data: &[u8]) -> bool {
    match name {
        "record_frame" => record_frame::run(data),
        "segment_recovery" => segment_recovery::run(data),
        "checkpoint_value" => checkpoint_value::run(data),
        "v2_command" => v2_command::run(data),
        "lookupd_command" => lookupd_command::run(data),
        "engine_ops" => engine_ops::run(data),
        _ => return false,
    }
    true
}
