//! `inspect`, `verify`, `repair` and `rebuild-meta`: rendering over `engine::check`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use engine::check::{
    self, Finding, MetaSurvey, RepairOptions, Severity, Survey, TopicSurvey, verify, worst,
};
use serde_json::{Value, json};

use crate::progress::Bar;

/// Arguments of `inspect` and `verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReadArgs {
    /// The data directory (nsqd's --data-path).
    data_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RepairArgs {
    /// The data directory (nsqd's --data-path). It must not be in use by a running nsqd.
    data_dir: PathBuf,
    /// Say what would be done and change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RebuildArgs {
    data_dir: PathBuf,
    /// Rebuild even though the store can be read (every channel restarts at its oldest message).
    #[arg(long)]
    force: bool,
}

/// The exit code of a set of findings: 0 clean or notes only, 1 repairable, 2 not repairable.
pub(crate) fn exit_code(findings: &[Finding]) -> ExitCode {
    match worst(findings) {
        None | Some(Severity::Note) => ExitCode::SUCCESS,
        Some(Severity::Repairable) => ExitCode::from(1),
        Some(Severity::Unrepairable) => ExitCode::from(2),
    }
}

fn survey(args: &ReadArgs) -> anyhow::Result<Survey> {
    let mut bar = Bar::bytes(args.quiet || args.json);
    let found = check::survey(&args.data_dir, &mut bar)
        .with_context(|| format!("reading {}", args.data_dir.display()))?;
    bar.finish();
    Ok(found)
}

pub(crate) fn inspect(args: ReadArgs) -> anyhow::Result<ExitCode> {
    let found = survey(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&survey_json(&found))?);
    } else {
        print!("{}", survey_text(&found));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn verify_command(args: ReadArgs) -> anyhow::Result<ExitCode> {
    let found = survey(&args)?;
    let findings = verify(&found);
    if args.json {
        let list: Vec<Value> = findings.iter().map(finding_json).collect();
        let worst = worst(&findings).map(Severity::label);
        println!("{}", serde_json::to_string_pretty(&json!({"findings": list, "worst": worst}))?);
    } else {
        for finding in &findings {
            println!("{}", finding_text(finding));
        }
        println!("{}", summary(&findings));
    }
    Ok(exit_code(&findings))
}

pub(crate) fn repair(args: RepairArgs) -> anyhow::Result<ExitCode> {
    let mut bar = Bar::bytes(args.quiet || args.json);
    let options = RepairOptions { dry_run: args.dry_run, before_action: None };
    let report = check::repair(&args.data_dir, options, &mut bar)
        .with_context(|| format!("repairing {}", args.data_dir.display()))?;
    bar.finish();
    // What is left: verify again (a dry run changed nothing, so it finds what it planned for).
    let after = check::survey(&args.data_dir, &mut check::NoProgress)
        .with_context(|| format!("reading {}", args.data_dir.display()))?;
    let remaining = verify(&after);
    if args.json {
        let actions: Vec<String> = report.actions.iter().map(ToString::to_string).collect();
        let remaining_json: Vec<Value> = remaining.iter().map(finding_json).collect();
        let value =
            json!({"dry_run": args.dry_run, "actions": actions, "remaining": remaining_json});
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let verb = if args.dry_run { "would" } else { "did" };
        if report.actions.is_empty() {
            println!("nothing to repair");
        }
        for action in &report.actions {
            println!("{verb}: {action}");
        }
        for finding in remaining.iter().filter(|f| f.severity != Severity::Repairable) {
            println!("left alone: {}", finding_text(finding));
        }
    }
    if args.dry_run {
        return Ok(if report.actions.is_empty() {
            exit_code(&remaining)
        } else {
            ExitCode::from(1)
        });
    }
    Ok(exit_code(&remaining))
}

pub(crate) fn rebuild(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let report = check::rebuild_meta(&args.data_dir, args.force)
        .with_context(|| format!("rebuilding the metadata store of {}", args.data_dir.display()))?;
    if let Some(backup) = &report.backup {
        println!("old store kept as {}", backup.display());
    }
    for (topic, channels) in &report.topics {
        println!(
            "topic {topic}: {} channels restarted at the oldest retained message",
            channels.len()
        );
    }
    for topic in &report.importing {
        println!("topic {topic}: left out, an import of it stopped midway (run import-nsq again)");
    }
    for topic in &report.without_catalog {
        println!("topic {topic}: no catalog, its messages wait for its first channel");
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(findings: &[Finding]) -> String {
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    match worst(findings) {
        None | Some(Severity::Note) => format!("clean ({} notes)", count(Severity::Note)),
        Some(_) => format!(
            "{} repairable, {} not repairable, {} notes",
            count(Severity::Repairable),
            count(Severity::Unrepairable),
            count(Severity::Note)
        ),
    }
}

pub(crate) fn finding_text(finding: &Finding) -> String {
    let at = finding.position.map(|p| format!(" at position {p}")).unwrap_or_default();
    format!("[{}] {}{at}: {}", finding.severity.label(), finding.path.display(), finding.message)
}

fn finding_json(finding: &Finding) -> Value {
    json!({
        "severity": finding.severity.label(),
        "kind": finding.kind.name(),
        "path": finding.path.display().to_string(),
        "position": finding.position,
        "topic": finding.topic,
        "message": finding.message,
    })
}

fn meta_state(found: &Survey) -> String {
    match &found.meta {
        MetaSurvey::Missing => "missing".into(),
        MetaSurvey::Unreadable(reason) => format!("unreadable: {reason}"),
        MetaSurvey::Read(_) => "ok".into(),
    }
}

fn survey_text(found: &Survey) -> String {
    let mut out = format!("data directory {}\n", found.data_dir.display());
    if let Some(holder) = &found.lock_holder {
        out.push_str(&format!("  in use by a running process (pid {holder})\n"));
    }
    out.push_str(&format!("  metadata store: {}\n", meta_state(found)));
    for topic in &found.topics {
        out.push_str(&topic_text(topic));
    }
    for path in &found.unknown_entries {
        out.push_str(&format!("  not a topic: {}\n", path.display()));
    }
    out
}

fn topic_text(topic: &TopicSurvey) -> String {
    let paused = match &topic.record {
        Some(Ok(record)) if record.paused_at.is_some() => " paused",
        _ => "",
    };
    let bytes: u64 = topic.segments.iter().map(|s| s.len_bytes).sum();
    let records: u64 = topic.segments.iter().map(|s| s.records).sum();
    let mut out = format!(
        "topic {}{paused}: offsets {}..{}, {records} records, {} segments, {bytes} bytes\n",
        topic.name,
        topic.oldest_offset,
        topic.next_offset,
        topic.segments.len()
    );
    if topic.record.is_none() {
        out.push_str("  not in the metadata store\n");
    }
    out.push_str(&format!(
        "  {:<26} {:>20} {:>20} {:>10} {:>12} {:>8}\n",
        "segment", "first record", "last record", "records", "bytes", "damaged"
    ));
    for segment in &topic.segments {
        let name =
            segment.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let opt = |o: Option<u64>| o.map_or("-".into(), |o| o.to_string());
        out.push_str(&format!(
            "  {name:<26} {:>20} {:>20} {:>10} {:>12} {:>8}\n",
            opt(segment.first_record),
            opt(segment.last_record),
            segment.records,
            segment.len_bytes,
            segment.damage.len() + usize::from(segment.header_problem.is_some())
        ));
    }
    if !topic.channels.is_empty() {
        out.push_str(&format!(
            "  {:<26} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10}\n",
            "channel", "floor", "next read", "depth", "backlog", "in flight", "deferred"
        ));
    }
    for channel in &topic.channels {
        let paused = matches!(&channel.record, Ok(r) if r.paused);
        let name = format!("{}{}", channel.name, if paused { " (paused)" } else { "" });
        match &channel.record {
            Ok(record) => out.push_str(&format!(
                "  {name:<26} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10}\n",
                record.floor,
                record.next_read,
                channel.depth,
                channel.backlog,
                channel.in_flight_at_crash,
                channel.deferred
            )),
            Err(reason) => out.push_str(&format!("  {name:<26} damaged checkpoint: {reason}\n")),
        }
    }
    out
}

fn survey_json(found: &Survey) -> Value {
    let topics: Vec<Value> = found
        .topics
        .iter()
        .map(|topic| {
            let segments: Vec<Value> = topic
                .segments
                .iter()
                .map(|s| {
                    let damage: Vec<Value> = s
                        .damage
                        .iter()
                        .map(|d| json!({"position": d.position, "len_bytes": d.len_bytes, "kind": format!("{:?}", d.kind), "lost": [d.lost.start, d.lost.end]}))
                        .collect();
                    json!({
                        "path": s.path.display().to_string(),
                        "first_offset": s.first_offset,
                        "first_record": s.first_record,
                        "last_record": s.last_record,
                        "records": s.records,
                        "len_bytes": s.len_bytes,
                        "body_bytes": s.body_bytes,
                        "deferred_records": s.deferred_records,
                        "oldest_timestamp_ns": s.oldest_timestamp_ns,
                        "newest_timestamp_ns": s.newest_timestamp_ns,
                        "header_problem": s.header_problem,
                        "damage": damage,
                        "read_error": s.read_error,
                    })
                })
                .collect();
            let channels: Vec<Value> = topic
                .channels
                .iter()
                .map(|c| match &c.record {
                    Ok(r) => json!({
                        "name": c.name, "paused": r.paused, "floor": r.floor, "next_read": r.next_read,
                        "depth": c.depth, "backlog": c.backlog, "in_flight_at_crash": c.in_flight_at_crash,
                        "deferred": c.deferred, "damaged_deferred": c.damaged_deferred,
                    }),
                    Err(reason) => json!({"name": c.name, "damaged": reason}),
                })
                .collect();
            let (paused, in_meta) = match &topic.record {
                Some(Ok(r)) => (Some(r.paused_at.is_some()), true),
                Some(Err(_)) => (None, true),
                None => (None, false),
            };
            json!({
                "name": topic.name,
                "paused": paused,
                "in_metadata_store": in_meta,
                "oldest_offset": topic.oldest_offset,
                "next_offset": topic.next_offset,
                "segments": segments,
                "channels": channels,
                "gaps": topic.gaps.iter().map(|g| [g.lost.start, g.lost.end]).collect::<Vec<_>>(),
                "quarantined": topic.manifest.entries.len(),
            })
        })
        .collect();
    json!({
        "data_dir": found.data_dir.display().to_string(),
        "locked_by": found.lock_holder,
        "metadata_store": meta_state(found),
        "topics": topics,
        "unknown_entries": found.unknown_entries.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    })
}
