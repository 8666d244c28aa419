//! What is wrong with a data directory, as [`verify`] finds it in a [`Survey`].

use std::path::PathBuf;

use super::survey::{DamageKind, MetaSurvey, Survey, TopicSurvey};
use crate::META_DIR_NAME;

/// How bad a finding is. The order is the exit code's: 0 clean (notes only), 1 repairable,
/// 2 not repairable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing, nothing to repair (orphans, stray files, losses already acknowledged).
    Note,
    /// `repair` fixes it.
    Repairable,
    /// `repair` cannot fix it (a file that cannot be read): an operator must look.
    Unrepairable,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Self::Note => "note",
            Self::Repairable => "repairable",
            Self::Unrepairable => "not repairable",
        }
    }
}

/// What kind of problem a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingKind {
    Locked,
    MetaMissing,
    MetaUnreadable,
    DamagedMetaValue,
    BadMetaKey,
    UnreadableFile,
    ShortSegment,
    SegmentHeader,
    DamagedRecords,
    Overlap,
    TornTail,
    DamagedLastRecord,
    DamagedTail,
    MissingOffsets,
    AcknowledgedLoss,
    LogEndBehind,
    CursorBeyondLog,
    CheckpointBelowLog,
    DeferredOutsideRange,
    TopicWithoutDirectory,
    OrphanTopicDirectory,
    OrphanChannel,
    Catalog,
    StrayFile,
}

impl FindingKind {
    /// A short stable name, for `--json` and for tests.
    pub fn name(self) -> &'static str {
        match self {
            Self::Locked => "locked",
            Self::MetaMissing => "meta-missing",
            Self::MetaUnreadable => "meta-unreadable",
            Self::DamagedMetaValue => "damaged-meta-value",
            Self::BadMetaKey => "bad-meta-key",
            Self::UnreadableFile => "unreadable-file",
            Self::ShortSegment => "short-segment",
            Self::SegmentHeader => "segment-header",
            Self::DamagedRecords => "damaged-records",
            Self::Overlap => "overlap",
            Self::TornTail => "torn-tail",
            Self::DamagedLastRecord => "damaged-last-record",
            Self::DamagedTail => "damaged-tail",
            Self::MissingOffsets => "missing-offsets",
            Self::AcknowledgedLoss => "acknowledged-loss",
            Self::LogEndBehind => "log-end-behind",
            Self::CursorBeyondLog => "cursor-beyond-log",
            Self::CheckpointBelowLog => "checkpoint-below-log",
            Self::DeferredOutsideRange => "deferred-outside-range",
            Self::TopicWithoutDirectory => "topic-without-directory",
            Self::OrphanTopicDirectory => "orphan-topic-directory",
            Self::OrphanChannel => "orphan-channel",
            Self::Catalog => "catalog",
            Self::StrayFile => "stray-file",
        }
    }
}

/// One problem: what, where, how bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub kind: FindingKind,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The byte position in `path`, when the problem has one.
    pub position: Option<u64>,
    /// The topic concerned, if any.
    pub topic: Option<String>,
    pub message: String,
}

struct Out<'a> {
    findings: &'a mut Vec<Finding>,
    topic: Option<&'a str>,
}

impl Out<'_> {
    fn push(
        &mut self,
        severity: Severity,
        kind: FindingKind,
        path: &std::path::Path,
        position: Option<u64>,
        message: String,
    ) {
        self.findings.push(Finding {
            severity,
            kind,
            path: path.to_path_buf(),
            position,
            topic: self.topic.map(str::to_owned),
            message,
        });
    }
}

/// Every problem of the surveyed directory, in the order of the survey.
pub fn verify(survey: &Survey) -> Vec<Finding> {
    use FindingKind as K;
    use Severity::{Note, Repairable};
    let mut findings = Vec::new();
    let mut out = Out { findings: &mut findings, topic: None };
    let meta_dir = survey.data_dir.join(META_DIR_NAME);
    if let Some(holder) = &survey.lock_holder {
        let pid = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
        let message = format!(
            "the data directory is in use by a running process{pid}: what follows may be changing under the check"
        );
        out.push(Note, K::Locked, &survey.data_dir, None, message);
    }
    match &survey.meta {
        MetaSurvey::Missing if !survey.topics.is_empty() => {
            let message = "the metadata store is missing: nsqd would load no topic; repair rebuilds it from the catalogs".into();
            out.push(Repairable, K::MetaMissing, &meta_dir, None, message);
        }
        MetaSurvey::Missing => {}
        MetaSurvey::Unreadable(reason) => {
            let message = format!(
                "the metadata store cannot be read ({reason}); repair sets it aside and rebuilds it from the catalogs"
            );
            out.push(Repairable, K::MetaUnreadable, &meta_dir, None, message);
        }
        MetaSurvey::Read(audit) => {
            for bad in &audit.bad_keys {
                let message = format!(
                    "entry {:?} of tree {}: {}; repair removes it",
                    String::from_utf8_lossy(&bad.key),
                    bad.tree.label(),
                    bad.reason
                );
                out.push(Repairable, K::BadMetaKey, &meta_dir, None, message);
            }
            for (topic, channel) in audit.channels.keys() {
                if !audit.topics.contains_key(topic) {
                    let message = format!(
                        "checkpoint of channel {channel:?} of topic {topic:?}, which the store does not list; repair removes it"
                    );
                    out.push(Repairable, K::OrphanChannel, &meta_dir, None, message);
                }
            }
        }
    }
    for path in &survey.unknown_entries {
        let message = "not a topic directory: ignored by nsqd".into();
        out.push(Note, K::StrayFile, path, None, message);
    }
    for topic in &survey.topics {
        let mut out = Out { findings: &mut findings, topic: Some(&topic.name) };
        verify_topic(&mut out, survey, topic);
    }
    findings
}

fn verify_topic(out: &mut Out<'_>, survey: &Survey, topic: &TopicSurvey) {
    use FindingKind as K;
    use Severity::{Note, Repairable, Unrepairable};
    let meta_read = matches!(survey.meta, MetaSurvey::Read(_));
    let meta_dir = survey.data_dir.join(META_DIR_NAME);
    if !topic.dir_exists {
        let message =
            "the store lists the topic but it has no directory: nsqd starts it with an empty log"
                .into();
        out.push(Note, K::TopicWithoutDirectory, &topic.dir, None, message);
    }
    if let Some(error) = &topic.list_error {
        out.push(
            Unrepairable,
            K::UnreadableFile,
            &topic.dir,
            None,
            format!("cannot list: {error}"),
        );
        return;
    }
    if topic.dir_exists && meta_read && topic.record.is_none() {
        let message = "topic directory the store does not list: nsqd does not load it (left alone; `rebuild-meta` would adopt it)".into();
        out.push(Note, K::OrphanTopicDirectory, &topic.dir, None, message);
        return;
    }
    for path in &topic.other_files {
        out.push(Note, K::StrayFile, path, None, "not a segment: ignored by nsqd".into());
    }
    if let Some(error) = &topic.manifest_error {
        let path = super::Manifest::dir(&survey.data_dir, &topic.name);
        out.push(
            Unrepairable,
            K::UnreadableFile,
            &path,
            None,
            format!("quarantine manifest: {error}"),
        );
    }
    for segment in &topic.segments {
        let path = &segment.path;
        if let Some(error) = &segment.read_error {
            out.push(Unrepairable, K::UnreadableFile, path, None, format!("cannot read: {error}"));
            continue;
        }
        if segment.short {
            let message = format!(
                "{} bytes, shorter than a segment header: repair writes a fresh header",
                segment.len_bytes
            );
            out.push(Repairable, K::ShortSegment, path, Some(0), message);
        }
        if let Some(problem) = &segment.header_problem {
            let message = format!(
                "damaged segment header ({problem}); the name is trusted, repair quarantines the header and writes a fresh one"
            );
            out.push(Repairable, K::SegmentHeader, path, Some(0), message);
        }
        for damage in &segment.damage {
            let (kind, what) = match damage.kind {
                DamageKind::Corrupt => {
                    (K::DamagedRecords, "bytes that hold no valid record, valid records after them")
                }
                DamageKind::Overlap => {
                    (K::Overlap, "records whose offsets belong to the next segment")
                }
                DamageKind::TornTail => {
                    (K::TornTail, "a torn tail: an unfinished write at the end of the log")
                }
                DamageKind::DamagedLastRecord => {
                    (K::DamagedLastRecord, "the last record fails its checksum")
                }
                DamageKind::DamagedTail => {
                    (K::DamagedTail, "the end of the segment holds no valid record")
                }
            };
            let lost = if damage.lost.is_empty() {
                String::new()
            } else {
                format!(", offsets {}..{} lost", damage.lost.start, damage.lost.end)
            };
            let message = format!(
                "{what}: {} bytes at position {}{lost}; repair quarantines them",
                damage.len_bytes, damage.position
            );
            out.push(Repairable, kind, path, Some(damage.position), message);
        }
    }
    let last_damaged = topic.segments.last().is_some_and(|s| !s.damage.is_empty());
    if topic.dir_exists && topic.next_offset > topic.log_next_offset && !last_damaged {
        let path = topic.segments.last().map_or(topic.dir.clone(), |s| s.path.clone());
        let message = format!(
            "the log ends at offset {} but offsets up to {} were used: nsqd would use them again; repair starts an empty segment at {}",
            topic.log_next_offset, topic.next_offset, topic.next_offset
        );
        out.push(Repairable, K::LogEndBehind, &path, None, message);
    }
    for gap in &topic.gaps {
        let (severity, kind, note) = if topic.manifest.covers(&gap.lost) {
            (Note, K::AcknowledgedLoss, "acknowledged in the quarantine manifest")
        } else {
            (
                Repairable,
                K::MissingOffsets,
                "no segment holds them (a deleted segment?); repair records the loss in the quarantine manifest",
            )
        };
        let message = format!("offsets {}..{} are missing: {note}", gap.lost.start, gap.lost.end);
        out.push(severity, kind, &gap.segment, None, message);
    }
    verify_checkpoints(out, topic, &meta_dir);
    verify_catalog(out, topic, meta_read);
}

fn verify_checkpoints(out: &mut Out<'_>, topic: &TopicSurvey, meta_dir: &std::path::Path) {
    use FindingKind as K;
    use Severity::Repairable;
    let (oldest, end) = (topic.oldest_offset, topic.next_offset);
    match &topic.record {
        Some(Err(reason)) => {
            let message = format!(
                "damaged topic value ({reason}); repair writes a fresh one (pause state from the catalog)"
            );
            out.push(Repairable, K::DamagedMetaValue, meta_dir, None, message);
        }
        Some(Ok(record)) => {
            if record.paused_at.is_some_and(|at| at > end) || record.orphan_floor > end {
                let message = format!(
                    "topic checkpoint beyond the end of the log (offset {end}); repair clamps it"
                );
                out.push(Repairable, K::CursorBeyondLog, meta_dir, None, message);
            }
            if topic.channels.is_empty() && record.orphan_floor < oldest && topic.dir_exists {
                let message = format!(
                    "the topic's backlog starts at offset {}, below the oldest segment ({oldest}): segments it needs are missing; repair clamps it",
                    record.orphan_floor
                );
                out.push(Repairable, K::CheckpointBelowLog, meta_dir, None, message);
            }
        }
        None => {}
    }
    for channel in &topic.channels {
        let name = &channel.name;
        let record = match &channel.record {
            Ok(record) => record,
            Err(reason) => {
                let message = format!(
                    "damaged checkpoint of channel {name:?} ({reason}); repair restarts it at the oldest retained message"
                );
                out.push(Repairable, K::DamagedMetaValue, meta_dir, None, message);
                continue;
            }
        };
        if record.next_read > end || record.floor > record.next_read {
            let message = format!(
                "channel {name:?}: cursor (floor {}, next read {}) beyond the end of the log ({end}); repair clamps it",
                record.floor, record.next_read
            );
            out.push(Repairable, K::CursorBeyondLog, meta_dir, None, message);
        }
        if record.floor < oldest && topic.dir_exists {
            let message = format!(
                "channel {name:?}: checkpoint floor {} is below the oldest segment ({oldest}): segments it needs are missing; repair clamps it",
                record.floor
            );
            out.push(Repairable, K::CheckpointBelowLog, meta_dir, None, message);
        }
        if channel.stray_deferred > 0 {
            let message = format!(
                "channel {name:?}: {} deferred entries outside the messages it has read and not finished; repair removes them",
                channel.stray_deferred
            );
            out.push(Repairable, K::DeferredOutsideRange, meta_dir, None, message);
        }
        if channel.damaged_deferred > 0 {
            let message = format!(
                "channel {name:?}: {} damaged deferred entries; repair removes them (the messages are due at once)",
                channel.damaged_deferred
            );
            out.push(Repairable, K::DamagedMetaValue, meta_dir, None, message);
        }
    }
}

fn verify_catalog(out: &mut Out<'_>, topic: &TopicSurvey, meta_read: bool) {
    use FindingKind as K;
    use Severity::Repairable;
    if !meta_read || !topic.dir_exists {
        return;
    }
    let path = topic.dir.join(crate::catalog::CATALOG_FILE_NAME);
    let catalog = match &topic.catalog {
        Err(reason) => {
            out.push(
                Repairable,
                K::Catalog,
                &path,
                None,
                format!("unreadable catalog ({reason}); repair rewrites it from the store"),
            );
            return;
        }
        Ok(None) => {
            out.push(
                Repairable,
                K::Catalog,
                &path,
                None,
                "no catalog; repair writes it from the store".into(),
            );
            return;
        }
        Ok(Some(catalog)) => catalog,
    };
    let expected = super::repair::expected_catalog(topic);
    if expected.as_ref().is_some_and(|expected| expected != catalog) {
        out.push(
            Repairable,
            K::Catalog,
            &path,
            None,
            "the catalog disagrees with the store; repair rewrites it from the store".into(),
        );
    }
}

/// The worst severity, or `None` when there is no finding.
pub fn worst(findings: &[Finding]) -> Option<Severity> {
    findings.iter().map(|f| f.severity).max()
}
