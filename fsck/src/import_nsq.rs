//! `nsq-fsck import-nsq NSQ_DATA_DIR --into DATA_DIR`: moves what a Go nsqd left on disk into an
//! nsq-rs data directory, so that a migration loses no queued message.
//!
//! # What is imported
//! Every topic and channel of `nsqd.dat`, paused or not, with the messages still pending in its
//! diskqueue (the unread part, as Go NSQ would read it: see `diskqueue`). For each topic, the
//! engine's `import` module lays them out in one log: each channel's own messages, then the
//! topic's (which every channel gets). The channel with the largest backlog is written last, its
//! already-delivered messages (attempts > 0) first: the engine then reads it in order, and the
//! others' own messages come back as redeliveries, one positioned read each. Timestamps and
//! attempts counts are kept; message IDs are not (an ID is the offset in the new log).
//!
//! # What is not, and says so
//! Corrupt records (the rest of their file), missing files, queues without a meta file (unless
//! `--salvage-without-meta`), `.bad` files (unless `--include-bad`), queues that `nsqd.dat` does
//! not list, ephemeral names, and topics that exist in the target: each is a finding in the
//! report, with the file and position when there is one. Messages only in Go nsqd's memory
//! (`--mem-queue-size`, in flight, deferred) at a crash were never on disk.
//!
//! # Refusals and exit codes
//! The target must not be in use (the engine's data-directory lock), nor the source (Go nsqd's
//! flock on its data path). Exit 0: everything pending was imported. 1: imported, but the report
//! has losses. 2: a topic was not imported (it exists in the target, or its import failed).
//! 8 (as for every subcommand): nothing could be done, for the reason printed.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use engine::import::{ImportError, ImportRecord, ImportTarget, TopicImport};
use engine::log::DEFAULT_MAX_BYTES_PER_FILE;
use engine::names::{is_ephemeral, is_valid_name};
use serde::{Deserialize, Serialize};

use crate::diskqueue::{
    self, FileRead, Finding, GoMessage, NsqDir, Plan, PlanOptions, QueueFiles, Severity,
};

/// Go nsqd's metadata file in its data path.
const NSQD_DAT: &str = "nsqd.dat";
/// `nsqd.dat` is a short list of names; a larger file is not read.
const NSQD_DAT_MAX_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// Go nsqd's data directory (its --data-path): nsqd.dat and the *.diskqueue.* files.
    nsq_data_dir: PathBuf,
    /// The nsq-rs data directory to import into (created if needed; nsqd must not be running).
    #[arg(long = "into", value_name = "DATA_DIR")]
    into: PathBuf,
    /// Also import the records of .bad files, up to the first invalid one. They may repeat
    /// messages Go nsqd had already delivered.
    #[arg(long)]
    include_bad: bool,
    /// Read every data file of a queue that has no usable meta file (Go nsqd ignores them).
    #[arg(long)]
    salvage_without_meta: bool,
    /// Segment size of the imported logs (nsqd's --max-bytes-per-file).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BYTES_PER_FILE)]
    max_bytes_per_file: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Deserialize)]
struct NsqdDat {
    #[serde(default)]
    topics: Option<Vec<TopicMeta>>,
}

#[derive(Debug, Deserialize)]
struct TopicMeta {
    name: String,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    channels: Option<Vec<ChannelMeta>>,
}

#[derive(Debug, Deserialize)]
struct ChannelMeta {
    name: String,
    #[serde(default)]
    paused: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    source: PathBuf,
    target: PathBuf,
    /// Always true: an imported message's ID is its offset in the new log.
    message_ids_changed: bool,
    topics: Vec<TopicReport>,
    /// Findings about the directory rather than one topic.
    findings: Vec<Finding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Imported,
    Exists,
    Skipped,
    Failed,
}

#[derive(Debug, Serialize)]
struct TopicReport {
    topic: String,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    paused: bool,
    messages: u64,
    /// The channels' queues in the order they were written, then the topic's own queue.
    queues: Vec<QueueReport>,
    findings: Vec<Finding>,
}

#[derive(Debug, Serialize)]
struct QueueReport {
    /// Go's queue name: `<topic>` or `<topic>:<channel>`.
    queue: String,
    /// `None` for the topic's own queue, whose messages go to every channel.
    channel: Option<String>,
    paused: bool,
    messages: u64,
    body_bytes: u64,
    /// `[start, end)` offsets in the new log.
    offsets: [u64; 2],
    attempts_kept: u64,
    /// Messages whose attempts count was not kept (they start again at attempt 1).
    attempts_reset: u64,
    files_read: Vec<FileRead>,
    bad_files_found: usize,
    findings: Vec<Finding>,
}

pub(crate) fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let source = &args.nsq_data_dir;
    let nsqd = read_nsqd_dat(source)?;
    let _source_lock = lock_source(source)?;
    let dir =
        diskqueue::scan_dir(source).with_context(|| format!("listing {}", source.display()))?;
    let mut target = ImportTarget::open(&args.into)
        .with_context(|| format!("refusing to import into {}", args.into.display()))?;
    target.set_max_bytes_per_file(args.max_bytes_per_file);
    let options = PlanOptions {
        include_bad: args.include_bad,
        salvage_without_meta: args.salvage_without_meta,
    };
    let mut report = Report {
        source: source.clone(),
        target: args.into.clone(),
        message_ids_changed: true,
        topics: Vec::new(),
        findings: Vec::new(),
    };
    let mut claimed = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for topic in nsqd.topics.unwrap_or_default() {
        if !seen.insert(topic.name.clone()) {
            let what = format!("topic {:?} is listed twice in nsqd.dat: imported once", topic.name);
            report.findings.push(Finding::note(None, what));
            continue;
        }
        let importer = TopicImporter { target: &target, source, dir: &dir, options };
        report.topics.push(importer.import(&topic, &mut claimed));
    }
    for (queue, files) in &dir.queues {
        if !claimed.contains(queue.as_str()) {
            let what = format!(
                "queue {queue:?} has files ({} data, {} .bad) but nsqd.dat does not list it: not \
                 imported",
                files.data.len(),
                files.bad.len()
            );
            let file = files.meta.as_deref().or(files.data.values().next().map(PathBuf::as_path));
            let finding = if files.data.is_empty() && files.bad.is_empty() {
                Finding::note(file, what)
            } else {
                Finding::loss(file, None, what)
            };
            report.findings.push(finding);
        }
    }
    for tmp in &dir.tmp_files {
        let what = "stray temporary file of Go nsqd (an interrupted meta write): ignored".into();
        report.findings.push(Finding::note(Some(tmp), what));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(exit_code(&report))
}

fn read_nsqd_dat(source: &Path) -> anyhow::Result<NsqdDat> {
    let path = source.join(NSQD_DAT);
    let len = std::fs::metadata(&path)
        .with_context(|| format!("{}: no Go nsqd metadata here", path.display()))?
        .len();
    if len > NSQD_DAT_MAX_BYTES {
        bail!("{}: {len} bytes, over the limit of {NSQD_DAT_MAX_BYTES}", path.display());
    }
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{}: invalid JSON", path.display()))
}

/// Go nsqd holds an exclusive flock on its data path while it runs; a shared one here keeps it
/// from starting during the import.
fn lock_source(source: &Path) -> anyhow::Result<File> {
    let dir = File::open(source).with_context(|| format!("opening {}", source.display()))?;
    match dir.try_lock_shared() {
        Ok(()) => Ok(dir),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{} is locked: a Go nsqd is running on it; stop it before importing",
            source.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            tracing::warn!(%error, dir = %source.display(), "cannot lock the source directory");
            Ok(dir)
        }
    }
}

/// One queue to import, planned.
struct Queue {
    name: String,
    channel: Option<String>,
    paused: bool,
    plan: Plan,
    bad_files: usize,
}

struct TopicImporter<'a> {
    target: &'a ImportTarget,
    source: &'a Path,
    dir: &'a NsqDir,
    options: PlanOptions,
}

impl TopicImporter<'_> {
    fn import(&self, topic: &TopicMeta, claimed: &mut BTreeSet<String>) -> TopicReport {
        let mut report = TopicReport {
            topic: topic.name.clone(),
            status: Status::Skipped,
            error: None,
            paused: topic.paused,
            messages: 0,
            queues: Vec::new(),
            findings: Vec::new(),
        };
        claimed.insert(topic.name.clone());
        if is_ephemeral(&topic.name) {
            let what = "ephemeral topic in nsqd.dat (Go nsqd never writes one there): skipped";
            report.findings.push(Finding::note(None, what.into()));
            return report;
        }
        if !is_valid_name(&topic.name) {
            let what = "not a valid NSQ topic name: skipped";
            report.findings.push(Finding::loss(None, None, what.into()));
            return report;
        }
        let mut channels = self.plan_channels(topic, claimed, &mut report.findings);
        // The largest backlog last: the engine reads the last channel's messages in order.
        if let Some(largest) =
            (0..channels.len()).rev().max_by_key(|&i| channels[i].plan.pending_bytes)
        {
            let queue = channels.remove(largest);
            channels.push(queue);
        }
        let own = self.plan(&topic.name, None, topic.paused);
        let mut import = match self.target.begin_topic(&topic.name, topic.paused) {
            Ok(import) => import,
            Err(error @ (ImportError::TopicExists(_) | ImportError::UnknownTopicDir { .. })) => {
                report.status = Status::Exists;
                report.error = Some(error.to_string());
                return report;
            }
            Err(error) => {
                report.status = Status::Failed;
                report.error = Some(error.to_string());
                return report;
            }
        };
        match fill(&mut import, &channels, &own, &mut report) {
            Ok(()) => match import.commit() {
                Ok(imported) => {
                    report.status = Status::Imported;
                    for (queue, channel) in report.queues.iter_mut().zip(&imported.channels) {
                        queue.offsets = [channel.messages.start, channel.messages.end];
                        queue.attempts_kept = channel.attempts_kept;
                        queue.attempts_reset += channel.attempts_dropped;
                    }
                    if let Some(own) = report.queues.last_mut().filter(|q| q.channel.is_none()) {
                        own.offsets = [imported.topic_messages.start, imported.topic_messages.end];
                    }
                    for leftover in &imported.removed_leftovers {
                        let what = "left by an interrupted import of this topic: removed".into();
                        report.findings.push(Finding::note(Some(leftover), what));
                    }
                }
                Err(error) => {
                    report.status = Status::Failed;
                    report.error = Some(format!("{error:#}"));
                }
            },
            Err(error) => {
                report.status = Status::Failed;
                report.error = Some(format!("{error:#}"));
                if let Err(abort_error) = import.abort() {
                    tracing::warn!(topic = %topic.name, %abort_error, "cleaning up failed");
                }
            }
        }
        if report.status != Status::Imported {
            // Nothing of it is in the target.
            report.messages = 0;
        }
        report
    }

    fn plan_channels(
        &self,
        topic: &TopicMeta,
        claimed: &mut BTreeSet<String>,
        findings: &mut Vec<Finding>,
    ) -> Vec<Queue> {
        let mut channels: Vec<Queue> = Vec::new();
        for channel in topic.channels.iter().flatten() {
            let name = &channel.name;
            if is_ephemeral(name) || !is_valid_name(name) {
                let (severity, why) = if is_ephemeral(name) {
                    (Severity::Note, "ephemeral channel in nsqd.dat (Go nsqd never writes one)")
                } else {
                    (Severity::Loss, "not a valid NSQ channel name")
                };
                let what = format!("channel {name:?}: {why}: skipped");
                findings.push(Finding { severity, file: None, position: None, what });
                continue;
            }
            if channels.iter().any(|c| c.channel.as_deref() == Some(name)) {
                let what = format!("channel {name:?} is listed twice in nsqd.dat: imported once");
                findings.push(Finding::note(None, what));
                continue;
            }
            // Go nsqd on Windows names a channel's queue `<topic>;<channel>`.
            let windows = format!("{};{name}", topic.name);
            let queue = if self.dir.queues.contains_key(&windows) {
                windows
            } else {
                format!("{}:{name}", topic.name)
            };
            claimed.insert(queue.clone());
            channels.push(self.plan(&queue, Some(name), channel.paused));
        }
        channels
    }

    fn plan(&self, queue: &str, channel: Option<&str>, paused: bool) -> Queue {
        let empty = QueueFiles::default();
        let files = self.dir.queues.get(queue).unwrap_or(&empty);
        Queue {
            name: queue.to_owned(),
            channel: channel.map(str::to_owned),
            paused,
            plan: diskqueue::plan_queue(self.source, queue, files, self.options),
            bad_files: files.bad.len(),
        }
    }
}

/// Appends every channel's queue, then the topic's own, recording what was read.
fn fill(
    import: &mut TopicImport<'_>,
    channels: &[Queue],
    own: &Queue,
    report: &mut TopicReport,
) -> anyhow::Result<()> {
    for (index, queue) in channels.iter().enumerate() {
        let name = queue.channel.as_deref().unwrap_or_default();
        import.begin_channel(name, queue.paused)?;
        let last = index + 1 == channels.len();
        let queue_report = if last {
            // Messages delivered before first: their attempts survive only there (see engine
            // `import`). The second pass finds the same damage again; it is reported once.
            let mut first = read_into(import, queue, |attempts| attempts > 0)?;
            let rest = read_into(import, queue, |attempts| attempts == 0)?;
            first.messages += rest.messages;
            first.body_bytes += rest.body_bytes;
            for (file, more) in first.files_read.iter_mut().zip(&rest.files_read) {
                file.messages += more.messages;
            }
            first
        } else {
            read_into(import, queue, |_| true)?
        };
        report.messages += queue_report.messages;
        report.queues.push(queue_report);
    }
    import.begin_topic_messages();
    let mut own_report = read_into(import, own, |_| true)?;
    if own_report.attempts_reset > 0 {
        let what = format!(
            "{} messages of the topic's own queue had an attempts count: not kept (each channel \
             gets them as new)",
            own_report.attempts_reset
        );
        own_report.findings.push(Finding::note(None, what));
    }
    report.messages += own_report.messages;
    report.queues.push(own_report);
    Ok(())
}

/// One pass over `queue`, appending the messages whose attempts count `want` accepts.
fn read_into(
    import: &mut TopicImport<'_>,
    queue: &Queue,
    want: impl Fn(u16) -> bool,
) -> anyhow::Result<QueueReport> {
    let mut first_offset = None;
    let mut end_offset = 0;
    let mut sink = |batch: &[GoMessage]| -> anyhow::Result<()> {
        let records: Vec<ImportRecord<'_>> = batch
            .iter()
            .map(|m| ImportRecord {
                timestamp_ns: m.timestamp_ns,
                attempts: m.attempts,
                body: &m.body,
            })
            .collect();
        let range = import.append(&records)?;
        first_offset.get_or_insert(range.start);
        end_offset = range.end;
        Ok(())
    };
    let read = diskqueue::read_queue(&queue.plan.spans, want, &mut sink)
        .with_context(|| format!("importing queue {}", queue.name))?;
    let mut findings = queue.plan.findings.clone();
    findings.extend(read.findings);
    let start = first_offset.unwrap_or(end_offset);
    Ok(QueueReport {
        queue: queue.name.clone(),
        channel: queue.channel.clone(),
        paused: queue.paused,
        messages: read.messages,
        body_bytes: read.body_bytes,
        offsets: [start, end_offset.max(start)],
        attempts_kept: 0,
        // For a channel the engine says how many it could not keep; for the topic's own queue
        // every attempts count is dropped.
        attempts_reset: if queue.channel.is_none() { read.attempted } else { 0 },
        files_read: read.files,
        bad_files_found: queue.bad_files,
        findings,
    })
}

fn exit_code(report: &Report) -> ExitCode {
    let refused = report.topics.iter().any(|t| matches!(t.status, Status::Exists | Status::Failed));
    let losses = report
        .topics
        .iter()
        .flat_map(|t| t.findings.iter().chain(t.queues.iter().flat_map(|q| q.findings.iter())))
        .chain(&report.findings)
        .any(|f| f.severity == Severity::Loss);
    ExitCode::from(if refused {
        2
    } else if losses {
        1
    } else {
        0
    })
}

fn render(report: &Report) -> String {
    let mut out =
        format!("import-nsq: {} -> {}\n", report.source.display(), report.target.display());
    for topic in &report.topics {
        let paused = if topic.paused { " (paused)" } else { "" };
        let status = match topic.status {
            Status::Imported => format!("imported, {} messages", topic.messages),
            Status::Exists => "NOT IMPORTED: exists in the target".into(),
            Status::Skipped => "skipped".into(),
            Status::Failed => "NOT IMPORTED: failed".into(),
        };
        out.push_str(&format!("topic {}{paused}: {status}\n", topic.topic));
        if let Some(error) = &topic.error {
            out.push_str(&format!("  {error}\n"));
        }
        for finding in &topic.findings {
            out.push_str(&render_finding("  ", finding));
        }
        for queue in &topic.queues {
            out.push_str(&render_queue(queue));
        }
    }
    for finding in &report.findings {
        out.push_str(&render_finding("", finding));
    }
    let imported = report.topics.iter().filter(|t| t.status == Status::Imported).count();
    let refused = report
        .topics
        .iter()
        .filter(|t| matches!(t.status, Status::Exists | Status::Failed))
        .count();
    let messages: u64 = report.topics.iter().map(|t| t.messages).sum();
    out.push_str(&format!(
        "{imported} topics imported, {refused} not imported, {messages} messages.\nMessage IDs \
         changed: an imported message's ID is its offset in the new topic log.\n"
    ));
    out
}

fn render_queue(queue: &QueueReport) -> String {
    let what = match &queue.channel {
        Some(channel) => format!("channel {channel}"),
        None => "topic's own queue (for every channel)".into(),
    };
    let paused = if queue.paused && queue.channel.is_some() { " (paused)" } else { "" };
    let mut out = format!(
        "  {what}{paused}: {} messages, {} body bytes, offsets {}..{}, from queue {}\n",
        queue.messages, queue.body_bytes, queue.offsets[0], queue.offsets[1], queue.queue
    );
    if queue.attempts_kept > 0 || queue.attempts_reset > 0 {
        out.push_str(&format!(
            "    attempts kept for {} messages, reset for {}\n",
            queue.attempts_kept, queue.attempts_reset
        ));
    }
    for file in &queue.files_read {
        let bad = if file.bad { " (.bad file)" } else { "" };
        out.push_str(&format!(
            "    read {}{bad} from position {}: {} messages\n",
            file.file.display(),
            file.from_position,
            file.messages
        ));
    }
    if queue.bad_files_found > 0 {
        out.push_str(&format!("    {} .bad files found\n", queue.bad_files_found));
    }
    for finding in &queue.findings {
        out.push_str(&render_finding("    ", finding));
    }
    out
}

fn render_finding(indent: &str, finding: &Finding) -> String {
    let severity = match finding.severity {
        Severity::Loss => "LOSS",
        Severity::Note => "note",
    };
    let place = match (&finding.file, finding.position) {
        (Some(file), Some(position)) => format!("{} at position {position}: ", file.display()),
        (Some(file), None) => format!("{}: ", file.display()),
        (None, _) => String::new(),
    };
    format!("{indent}{severity}: {place}{}\n", finding.what)
}
