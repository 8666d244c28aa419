//! Offline checks of a data directory: what `nsq-fsck` inspects, verifies and repairs.
//!
//! # Steps
//! 1. [`survey()`] reads a data directory without changing a byte: every segment of every topic
//!    is scanned with the log's own rules (FORMAT.md §3, §5), the metadata store is read from a
//!    copy (opening sled writes to it), catalogs and quarantine manifests are parsed.
//! 2. [`verify()`] turns a survey into [`Finding`]s, each naming a file and, where it has one, a
//!    position, with a [`Severity`]: a note, repairable, or not repairable.
//! 3. [`repair()`] fixes what verify found, in steps that are each atomic on disk (a file written
//!    aside, fsynced, renamed over), so that a repair killed at any point and run again reaches
//!    the same result, and a second repair finds nothing to do.
//!
//! # Repair rules
//! - Nothing is silently dropped. Damaged bytes (bad records, a bad header, a torn tail) are
//!   first copied into `<data>/quarantine/<topic>/`, with a line in its `MANIFEST` naming the
//!   segment, position, length and the offsets lost; only then is the segment rewritten with its
//!   valid records, byte for byte, under a fresh header.
//! - Offsets are never reused: when the last records of a log are quarantined, the log gets an
//!   empty last segment that starts after them, as recovery does for a damaged last record.
//! - Offsets that no segment holds (a deleted segment) are acknowledged in the manifest, so the
//!   gap stays explained.
//! - Checkpoints are fitted to the log: cursors beyond it and floors below its oldest record are
//!   clamped, deferred entries outside the unfinished range removed, damaged values replaced by
//!   the start-over state the engine would use (the channel's oldest retained message), keys the
//!   engine cannot parse removed. The catalogs are rewritten to match the store.
//! - A store that cannot be opened is set aside (`meta.broken-<unix seconds>`) and rebuilt from
//!   the catalogs, every channel restarting at its oldest retained message (duplicates, no loss).
//! - Topic directories the store does not list, and unknown files, are reported and left alone.

mod findings;
mod manifest;
mod meta_copy;
mod rebuild;
mod repair;
mod survey;

pub use findings::{Finding, FindingKind, Severity, verify, worst};
pub use manifest::{MANIFEST_FILE_NAME, Manifest, ManifestEntry, QUARANTINE_DIR_NAME};
pub use meta_copy::audit_copy;
pub use rebuild::{RebuildReport, rebuild_meta};
pub use repair::{RepairAction, RepairOptions, RepairReport, repair};
pub use survey::{
    ChannelSurvey, DamageKind, DamageSurvey, Gap, MetaSurvey, NoProgress, ScanProgress,
    SegmentSurvey, Survey, TopicSurvey, survey,
};
