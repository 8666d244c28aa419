//! The replay loop: records in offset order through the filters, into bounded batches, paced,
//! out to the sink; and the report of what happened.

use std::path::PathBuf;

use bytes::Bytes;
use engine::log::Record;
use indicatif::ProgressBar;

use super::pace::{PaceClock, Pacer};
use super::sink::Sink;
use super::source::{Damage, Item, Unit, read_unit};

/// Damaged ranges listed in the report; more are counted only.
pub(crate) const DAMAGE_LISTED_MAX: usize = 1000;
/// Records skipped in a row between two calls of the sink's idle check.
const SKIPPED_PER_IDLE_CHECK: u64 = 4096;

/// Which records to replay: offsets in `[from_offset, to_offset)`, publish times in
/// `[since_ns, until_ns)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Filter {
    pub(crate) from_offset: u64,
    pub(crate) to_offset: u64,
    pub(crate) since_ns: i64,
    pub(crate) until_ns: i64,
}

impl Filter {
    fn accepts(&self, record: &Record) -> bool {
        (self.from_offset..self.to_offset).contains(&record.offset)
            && (self.since_ns..self.until_ns).contains(&record.timestamp_ns)
    }

    /// Whether no record of `unit` can be in the offset range, so it need not be read.
    fn excludes(&self, unit: &Unit) -> bool {
        unit.first_offset >= self.to_offset
            || unit.end_offset.is_some_and(|end| end <= self.from_offset)
    }
}

/// What a replay did.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) replayed: u64,
    pub(crate) batches: u64,
    pub(crate) skipped_by_filter: u64,
    /// Records at or below an offset already seen: a second copy of a segment.
    pub(crate) duplicates: u64,
    pub(crate) files_read: u64,
    /// Files wholly outside the offset range, not read.
    pub(crate) files_skipped: u64,
    /// The first [`DAMAGE_LISTED_MAX`] damaged ranges met.
    pub(crate) damage: Vec<Damage>,
    pub(crate) damage_count: u64,
}

/// Runs records through the filter into batches for the sink.
pub(crate) struct Replayer<C> {
    filter: Filter,
    sink: Box<dyn Sink>,
    pacer: Pacer<C>,
    batch_records: usize,
    batch: Vec<Bytes>,
    batch_bytes: u64,
    last_offset: Option<u64>,
    bar: ProgressBar,
    report: Report,
}

impl<C: PaceClock> Replayer<C> {
    pub(crate) fn new(
        filter: Filter,
        sink: Box<dyn Sink>,
        pacer: Pacer<C>,
        batch_records: usize,
        bar: ProgressBar,
    ) -> Self {
        let batch_records = pacer.batch_records(batch_records);
        Self {
            filter,
            sink,
            pacer,
            batch_records,
            batch: Vec::new(),
            batch_bytes: 0,
            last_offset: None,
            bar,
            report: Report::default(),
        }
    }

    /// Replays what `unit` holds that passes the filter.
    pub(crate) fn unit(&mut self, unit: &Unit) -> anyhow::Result<()> {
        if self.filter.excludes(unit) {
            self.report.files_skipped += 1;
            self.bar.inc(unit.len_bytes);
            return Ok(());
        }
        let done_bytes = self.bar.position() + unit.len_bytes;
        read_unit(unit, |item| match item {
            Item::Record { record, len_bytes } => {
                self.bar.inc(len_bytes);
                self.record(record)
            }
            Item::Damaged(damage) => {
                self.damaged(damage);
                Ok(())
            }
        })?;
        self.report.files_read += 1;
        self.sink.idle()?;
        self.bar.set_position(done_bytes);
        self.bar.set_message(format!("{} replayed", self.report.replayed));
        Ok(())
    }

    fn record(&mut self, record: Record) -> anyhow::Result<()> {
        if self.last_offset.is_some_and(|last| record.offset <= last) {
            self.report.duplicates += 1;
            return self.skipped();
        }
        self.last_offset = Some(record.offset);
        if !self.filter.accepts(&record) {
            self.report.skipped_by_filter += 1;
            return self.skipped();
        }
        let cost = 4 + record.body.len() as u64;
        if !self.batch.is_empty() && self.batch_bytes + cost > self.sink.max_batch_bytes() {
            self.flush()?;
        }
        self.batch.push(record.body);
        self.batch_bytes += cost;
        if self.batch.len() >= self.batch_records {
            self.flush()?;
        }
        Ok(())
    }

    /// Lets the sink keep its connection alive through long filtered stretches.
    fn skipped(&mut self) -> anyhow::Result<()> {
        let skipped = self.report.skipped_by_filter + self.report.duplicates;
        if skipped.is_multiple_of(SKIPPED_PER_IDLE_CHECK) { self.sink.idle() } else { Ok(()) }
    }

    fn damaged(&mut self, damage: Damage) {
        tracing::warn!(file = %damage.file.display(), position = damage.position, "{}", damage.problem);
        self.report.damage_count += 1;
        if self.report.damage.len() < DAMAGE_LISTED_MAX {
            self.report.damage.push(damage);
        }
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let count = self.batch.len() as u64;
        self.pacer.release(count);
        self.sink.publish(&self.batch)?;
        self.report.replayed += count;
        self.report.batches += 1;
        self.batch.clear();
        self.batch_bytes = 0;
        Ok(())
    }

    /// Sends the last batch, lets go of the sink and returns the report and where it went.
    pub(crate) fn finish(mut self) -> anyhow::Result<(Report, String)> {
        self.flush()?;
        self.bar.finish_and_clear();
        let destination = self.sink.describe();
        self.sink.finish()?;
        Ok((self.report, destination))
    }
}

/// The report as printed on standard output.
pub(crate) fn render(report: &Report, destination: &str) -> String {
    let mut out = format!(
        "replayed {} messages in {} batches to {destination}\n\
         skipped by filter: {}; already replayed from another copy: {}\n\
         files read: {}; outside the offset range, not read: {}\n\
         damaged ranges: {}\n",
        report.replayed,
        report.batches,
        report.skipped_by_filter,
        report.duplicates,
        report.files_read,
        report.files_skipped,
        report.damage_count,
    );
    for damage in &report.damage {
        let file: &PathBuf = &damage.file;
        out.push_str(&format!(
            "  {} at position {}: {}\n",
            file.display(),
            damage.position,
            damage.problem
        ));
    }
    if report.damage_count > report.damage.len() as u64 {
        out.push_str(&format!(
            "  ... and {} more\n",
            report.damage_count - report.damage.len() as u64
        ));
    }
    out
}
