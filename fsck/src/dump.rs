//! `dump`: the records of a topic, read straight from its segments (nothing is written).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine as _;
use engine::log::{SegmentItem, SegmentReader, list_segments};
use engine::storage::{FsStorage, Storage};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BodyFormat {
    /// UTF-8 text, invalid bytes replaced.
    Text,
    Hex,
    Base64,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DumpArgs {
    /// The data directory (nsqd's --data-path).
    data_dir: PathBuf,
    #[arg(long)]
    topic: String,
    /// The first offset to print.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// How many records to print (all when absent).
    #[arg(long)]
    count: Option<u64>,
    /// How bodies are printed.
    #[arg(long, value_enum, default_value_t = BodyFormat::Text)]
    body: BodyFormat,
    /// Show attempts (and deferred due times) from this channel's checkpoint.
    #[arg(long)]
    channel: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

/// A channel's view of a record: its attempts and, when deferred, when it is due.
#[derive(Debug, Default, Clone, Copy)]
struct ChannelView {
    attempts: u16,
    due_ns: Option<i64>,
}

pub(crate) fn run(args: DumpArgs) -> anyhow::Result<ExitCode> {
    let dir = args.data_dir.join(engine::TOPICS_DIR_NAME).join(&args.topic);
    if !dir.is_dir() {
        bail!("no topic {:?} in {}", args.topic, args.data_dir.display());
    }
    let views = match &args.channel {
        Some(channel) => Some(channel_views(&args, channel)?),
        None => None,
    };
    let storage = FsStorage;
    let listing =
        list_segments(&storage, &dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut left = args.count.unwrap_or(u64::MAX);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut damaged = 0u64;
    for (index, (first_offset, path)) in listing.segments.iter().enumerate() {
        let limit = listing.segments.get(index + 1).map(|(next, _)| *next);
        if left == 0 {
            break;
        }
        if limit.is_some_and(|limit| limit <= args.from) {
            continue;
        }
        let file =
            storage.open(path, false).with_context(|| format!("opening {}", path.display()))?;
        let len = file.len().with_context(|| format!("reading {}", path.display()))?;
        let mut reader = SegmentReader::new(Arc::clone(&file), *first_offset, len, limit);
        while left > 0 {
            let item = reader.next().with_context(|| format!("reading {}", path.display()))?;
            let Some(item) = item else { break };
            let (position, record) = match item {
                SegmentItem::Record { position, record, .. } => (position, record),
                SegmentItem::Damaged { position, len_bytes, .. } => {
                    damaged += 1;
                    eprintln!(
                        "{}: {len_bytes} damaged bytes at position {position} skipped",
                        path.display()
                    );
                    continue;
                }
            };
            if record.offset < args.from {
                continue;
            }
            left -= 1;
            let view = views.as_ref().map(|views| views.of(record.offset));
            let body = render_body(&record.body, args.body);
            if args.json {
                let value = json!({
                    "offset": record.offset,
                    "id": String::from_utf8_lossy(&engine::message_id::message_id(record.offset)),
                    "timestamp_ns": record.timestamp_ns,
                    "deliver_at_ns": (record.deliver_at_ns != 0).then_some(record.deliver_at_ns),
                    "attempts": view.map(|v| v.attempts),
                    "due_ns": view.and_then(|v| v.due_ns),
                    "segment": path.display().to_string(),
                    "position": position,
                    "body": body,
                });
                writeln!(out, "{value}")?;
            } else {
                let attempts = view.map_or("-".into(), |v| v.attempts.to_string());
                let deliver =
                    if record.deliver_at_ns != 0 { time(record.deliver_at_ns) } else { "-".into() };
                writeln!(
                    out,
                    "{}\t{}\tattempts={attempts}\tdeliver_at={deliver}\t{body}",
                    record.offset,
                    time(record.timestamp_ns)
                )?;
            }
        }
    }
    out.flush()?;
    Ok(if damaged > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn render_body(body: &[u8], format: BodyFormat) -> String {
    match format {
        BodyFormat::Text => String::from_utf8_lossy(body).into_owned(),
        BodyFormat::Hex => body.iter().map(|b| format!("{b:02x}")).collect(),
        BodyFormat::Base64 => base64::engine::general_purpose::STANDARD.encode(body),
    }
}

/// Nanoseconds since the Unix epoch as RFC 3339.
fn time(ns: i64) -> String {
    let secs = u64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or(0);
    let nanos = u32::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or(0);
    let at = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
    humantime::format_rfc3339_nanos(at).to_string()
}

/// A channel's checkpoint, read for the records' views.
struct ChannelViews {
    record: engine::meta::ChannelRecord,
    /// The deferred messages, with their own counts and due times.
    deferred: BTreeMap<u64, ChannelView>,
}

impl ChannelViews {
    fn of(&self, offset: u64) -> ChannelView {
        self.deferred.get(&offset).copied().unwrap_or_else(|| ChannelView {
            attempts: self.record.attempts_of(offset),
            due_ns: None,
        })
    }
}

/// Attempts and deferred due times of `channel`, from a copy of the store.
fn channel_views(args: &DumpArgs, channel: &str) -> anyhow::Result<ChannelViews> {
    let meta_dir = args.data_dir.join(engine::META_DIR_NAME);
    let audit = engine::check::audit_copy(&meta_dir).map_err(anyhow::Error::msg)?;
    let key = (args.topic.clone(), channel.to_owned());
    let record = match audit.channels.get(&key) {
        Some(Ok(record)) => record.clone(),
        Some(Err(reason)) => bail!("the checkpoint of channel {channel:?} is damaged: {reason}"),
        None => bail!("no channel {channel:?} in topic {:?}", args.topic),
    };
    let mut deferred_views = BTreeMap::new();
    if let Some(deferred) = audit.deferred.get(&key) {
        for (offset, entry) in &deferred.entries {
            deferred_views.insert(
                *offset,
                ChannelView { attempts: entry.attempts, due_ns: Some(entry.due_ns) },
            );
        }
    }
    Ok(ChannelViews { record, deferred: deferred_views })
}
