//! Go NSQ's on-disk queues, read for `import-nsq` (NSQ.md §7.1, §7.2; go-diskqueue v1.1.0).
//!
//! # Files
//! One queue per topic (`<topic>`) and per channel (`<topic>:<channel>`, `;` on Windows), in
//! Go nsqd's `--data-path`:
//! ```text
//! <name>.diskqueue.meta.dat          "<depth>\n<readFile>,<readPos>\n<writeFile>,<writePos>\n"
//! <name>.diskqueue.<NNNNNN>.dat      records, the number zero-padded to at least 6 digits
//! <name>.diskqueue.<NNNNNN>.dat.bad  a data file Go NSQ gave up on
//! ```
//! A record is `[u32 BE length][i64 BE timestamp ns][u16 BE attempts][16 B hex ID][body]`,
//! length = 26 + body. There is no checksum.
//!
//! # What is pending, as Go NSQ would read it
//! - From `(readFileNum, readPos)` to the end of `writeFileNum`, each file read to its end. For
//!   files before the write file this is Go's rule (their end is their size). For the write file
//!   it is Go's rule after a crash: a meta file older than the data (`writePos` below the file
//!   size) makes Go read on to the end of the file. Both cases are reported.
//! - A length below 26 or above [`GO_RECORD_MAX_BYTES`], or a record cut short by the end of the
//!   file, ends the file: there is no way to find the next record. Go NSQ does the same (it
//!   renames the file `.bad` and goes on with the next one). Reported with file and position.
//! - A missing meta file: Go NSQ starts the queue empty and ignores its data files. So does the
//!   import, unless asked to salvage them (every data file read whole, in number order).
//! - Data files before the read file (already consumed) and after the write file (Go would
//!   overwrite them) are reported and not read.

// Go's diskqueue files are big-endian; the workspace lint guards our little-endian disk format.
#![allow(clippy::big_endian_bytes)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use engine::format::FORMAT_MAX_BODY_BYTES;
use serde::Serialize;

/// Bytes of a record's length prefix.
const GO_LENGTH_BYTES: u64 = 4;
/// Timestamp, attempts and ID: the part of a record's length that is not body.
const GO_MESSAGE_HEADER_LEN: usize = 8 + 2 + 16;
pub(crate) const GO_MESSAGE_HEADER_BYTES: u64 = GO_MESSAGE_HEADER_LEN as u64;
/// The largest record length read: a body of up to the engine's format limit (Go's own limit is
/// `--max-msg-size` + 26, 1 MiB + 26 by default).
pub(crate) const GO_RECORD_MAX_BYTES: u64 = GO_MESSAGE_HEADER_BYTES + FORMAT_MAX_BODY_BYTES as u64;
/// Read buffer of one data file.
const READ_BUFFER_BYTES: usize = 256 * 1024;

const META_SUFFIX: &str = ".diskqueue.meta.dat";
const DATA_INFIX: &str = ".diskqueue.";

/// How much a finding matters: `loss` means messages may not have been imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    Loss,
    Note,
}

/// Something the import found and did not (or could not) import as usual.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Finding {
    pub(crate) severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) position: Option<u64>,
    pub(crate) what: String,
}

impl Finding {
    pub(crate) fn loss(file: Option<&Path>, position: Option<u64>, what: String) -> Self {
        Self { severity: Severity::Loss, file: file.map(Path::to_path_buf), position, what }
    }

    pub(crate) fn note(file: Option<&Path>, what: String) -> Self {
        Self { severity: Severity::Note, file: file.map(Path::to_path_buf), position: None, what }
    }
}

/// The diskqueue files of one queue.
#[derive(Debug, Default)]
pub(crate) struct QueueFiles {
    pub(crate) meta: Option<PathBuf>,
    pub(crate) data: BTreeMap<u64, PathBuf>,
    pub(crate) bad: BTreeMap<u64, PathBuf>,
}

/// The diskqueue files of a Go NSQ data directory, by queue name, and stray `.tmp` files.
#[derive(Debug, Default)]
pub(crate) struct NsqDir {
    pub(crate) queues: BTreeMap<String, QueueFiles>,
    pub(crate) tmp_files: Vec<PathBuf>,
}

/// Lists `dir` once and sorts its diskqueue files by queue.
pub(crate) fn scan_dir(dir: &Path) -> io::Result<NsqDir> {
    let mut found = NsqDir::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        let path = entry.path();
        if name.ends_with(".tmp") && name.contains(DATA_INFIX) {
            found.tmp_files.push(path);
        } else if let Some(queue) = name.strip_suffix(META_SUFFIX) {
            found.queues.entry(queue.to_owned()).or_default().meta = Some(path);
        } else if let Some((queue, number, bad)) = parse_data_file_name(&name) {
            let files = found.queues.entry(queue.to_owned()).or_default();
            let by_number = if bad { &mut files.bad } else { &mut files.data };
            by_number.insert(number, path);
        }
    }
    found.tmp_files.sort();
    Ok(found)
}

/// `<queue>.diskqueue.<digits>.dat[.bad]` → queue, number, whether `.bad`.
fn parse_data_file_name(name: &str) -> Option<(&str, u64, bool)> {
    let (stem, bad) = match name.strip_suffix(".dat.bad") {
        Some(stem) => (stem, true),
        None => (name.strip_suffix(".dat")?, false),
    };
    // The number has no dot; the queue name may contain ".diskqueue." itself.
    let (queue, digits) = stem.rsplit_once(DATA_INFIX)?;
    if queue.is_empty() || digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((queue, digits.parse().ok()?, bad))
}

/// The positions of a queue's meta file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueMeta {
    pub(crate) depth: i64,
    pub(crate) read_file: u64,
    pub(crate) read_pos: u64,
    pub(crate) write_file: u64,
    pub(crate) write_pos: u64,
}

/// Parses `"<depth>\n<readFileNum>,<readPos>\n<writeFileNum>,<writePos>\n"`.
pub(crate) fn parse_meta(text: &str) -> Result<QueueMeta, String> {
    let mut lines = text.lines().map(str::trim);
    let mut line = |what: &str| lines.next().ok_or_else(|| format!("no {what} line"));
    let depth_line = line("depth")?;
    let depth = depth_line.parse().map_err(|_| format!("depth {depth_line:?} is not a number"))?;
    let pair = |text: &str, what: &str| -> Result<(u64, u64), String> {
        let invalid = || format!("{what} position {text:?} is not two non-negative numbers");
        let (file, pos) = text.split_once(',').ok_or_else(invalid)?;
        Ok((
            file.trim().parse().map_err(|_| invalid())?,
            pos.trim().parse().map_err(|_| invalid())?,
        ))
    };
    let (read_file, read_pos) = pair(line("read")?, "read")?;
    let (write_file, write_pos) = pair(line("write")?, "write")?;
    Ok(QueueMeta { depth, read_file, read_pos, write_file, write_pos })
}

/// `<dir>/<queue>.diskqueue.<number:06>.dat`, as Go names it.
pub(crate) fn data_file_path(dir: &Path, queue: &str, number: u64) -> PathBuf {
    dir.join(format!("{queue}{DATA_INFIX}{number:06}.dat"))
}

/// A file to read from `start` to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) path: PathBuf,
    pub(crate) start: u64,
    /// A `.bad` file: read up to its first invalid record like any other.
    pub(crate) bad: bool,
}

/// What to read of one queue, and what was found deciding it.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) spans: Vec<Span>,
    pub(crate) findings: Vec<Finding>,
    /// Bytes from each span's start to its file's end: the size of the backlog.
    pub(crate) pending_bytes: u64,
}

/// Choices of the plan that go beyond what Go NSQ would read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PlanOptions {
    pub(crate) include_bad: bool,
    pub(crate) salvage_without_meta: bool,
}

/// Decides what of `queue` is pending (see the module documentation).
pub(crate) fn plan_queue(
    dir: &Path,
    queue: &str,
    files: &QueueFiles,
    options: PlanOptions,
) -> Plan {
    let mut plan = Plan::default();
    for path in files.bad.values() {
        if options.include_bad {
            let what = ".bad file: imported up to its first invalid record (it may repeat \
                        messages Go NSQ delivered)";
            plan.findings.push(Finding::note(Some(path), what.into()));
            plan.add(path, 0, true);
        } else {
            plan.findings.push(Finding::loss(
                Some(path),
                None,
                ".bad file: not imported (--include-bad imports it)".into(),
            ));
        }
    }
    let meta = match &files.meta {
        None => Err("no meta file".to_owned()),
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("meta file unreadable: {e}"))
            .and_then(|text| parse_meta(&text).map_err(|e| format!("meta file invalid: {e}"))),
    };
    let meta = match meta {
        Ok(meta) => meta,
        Err(reason) => {
            let meta_path =
                files.meta.clone().unwrap_or_else(|| dir.join(format!("{queue}{META_SUFFIX}")));
            if files.data.is_empty() {
                if files.meta.is_some() {
                    plan.findings.push(Finding::loss(
                        Some(&meta_path),
                        None,
                        format!("{reason}; no data files"),
                    ));
                }
            } else if options.salvage_without_meta {
                let what = format!("{reason}: every data file read whole (--salvage-without-meta)");
                plan.findings.push(Finding::note(Some(&meta_path), what));
                for path in files.data.values() {
                    plan.add(path, 0, false);
                }
            } else {
                let what = format!(
                    "{reason}: Go NSQ would start this queue empty; its {} data files are not \
                     imported (--salvage-without-meta reads them)",
                    files.data.len()
                );
                plan.findings.push(Finding::loss(Some(&meta_path), None, what));
            }
            return plan;
        }
    };
    plan.add_from_meta(dir, queue, files, &meta);
    plan
}

impl Plan {
    fn add(&mut self, path: &Path, start: u64, bad: bool) {
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        self.pending_bytes += size.saturating_sub(start);
        self.spans.push(Span { path: path.to_path_buf(), start, bad });
    }

    fn add_from_meta(&mut self, dir: &Path, queue: &str, files: &QueueFiles, meta: &QueueMeta) {
        let meta_path = files.meta.as_deref();
        if (meta.read_file, meta.read_pos) > (meta.write_file, meta.write_pos) {
            let what = format!(
                "read position {},{} is past write position {},{}: Go NSQ skips to a new file; \
                 nothing imported",
                meta.read_file, meta.read_pos, meta.write_file, meta.write_pos
            );
            self.findings.push(Finding::loss(meta_path, None, what));
            return;
        }
        let before = files.data.range(..meta.read_file).count();
        if before > 0 {
            self.findings.push(Finding::note(
                meta_path,
                format!(
                    "{before} data files before the read file {} (consumed) ignored",
                    meta.read_file
                ),
            ));
        }
        for path in files.data.range(meta.write_file.saturating_add(1)..).map(|(_, p)| p) {
            let what = format!(
                "data file past the write file {} of the meta file: not imported (Go NSQ would \
                 overwrite it)",
                meta.write_file
            );
            self.findings.push(Finding::loss(Some(path), None, what));
        }
        let mut expected = meta.read_file;
        for (&number, path) in files.data.range(meta.read_file..=meta.write_file) {
            if number > expected {
                self.missing(dir, queue, expected, number - 1);
            }
            expected = number.saturating_add(1);
            let start = if number == meta.read_file { meta.read_pos } else { 0 };
            if number == meta.write_file {
                self.check_write_file(path, meta.write_pos);
            }
            self.add(path, start, false);
        }
        // A write file with nothing written yet is not created until the first write.
        let last_expected = if meta.write_pos == 0 {
            meta.write_file.checked_sub(1)
        } else {
            Some(meta.write_file)
        };
        if let Some(last) = last_expected.filter(|&last| last >= expected) {
            self.missing(dir, queue, expected, last);
        }
    }

    fn missing(&mut self, dir: &Path, queue: &str, first: u64, last: u64) {
        let path = data_file_path(dir, queue, first);
        let what = if first == last {
            "data file missing: its messages are lost".to_owned()
        } else {
            format!("data files {first} to {last} missing: their messages are lost")
        };
        self.findings.push(Finding::loss(Some(&path), None, what));
    }

    fn check_write_file(&mut self, path: &Path, write_pos: u64) {
        let Ok(size) = std::fs::metadata(path).map(|m| m.len()) else { return };
        if size > write_pos {
            let what = format!(
                "meta file older than the data (write position {write_pos}, file size {size}): \
                 read to the end of the file, as Go NSQ does after a crash; messages consumed \
                 since its last sync come again"
            );
            self.findings.push(Finding::note(Some(path), what));
        } else if size < write_pos {
            let what = format!(
                "file is {size} bytes but the meta file says {write_pos} were written: the {} \
                 bytes after its end are lost",
                write_pos - size
            );
            self.findings.push(Finding::loss(Some(path), Some(size), what));
        }
    }
}

/// One message of a Go diskqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GoMessage {
    pub(crate) timestamp_ns: i64,
    pub(crate) attempts: u16,
    pub(crate) body: Vec<u8>,
}

/// Why a data file's reading stopped before its end: the rest of the file is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub(crate) position: u64,
    pub(crate) reason: String,
}

/// Reads the records of one data file from a position on.
#[derive(Debug)]
pub(crate) struct SpanReader {
    reader: BufReader<File>,
    pos: u64,
    len: u64,
}

/// What the next record of a file is.
#[derive(Debug)]
pub(crate) enum Next {
    /// A message, with its body when `want` accepted its attempts count.
    Message {
        attempts: u16,
        message: Option<GoMessage>,
    },
    End,
    Damaged(Damage),
}

impl SpanReader {
    pub(crate) fn open(span: &Span) -> io::Result<Self> {
        let mut file = File::open(&span.path)?;
        let len = file.metadata()?.len();
        if span.start > 0 && span.start <= len {
            file.seek(SeekFrom::Start(span.start))?;
        }
        Ok(Self { reader: BufReader::with_capacity(READ_BUFFER_BYTES, file), pos: span.start, len })
    }

    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// The next record; its body is read only if `want(attempts)`, and skipped otherwise, so
    /// that a pass over a file can pick messages by attempts count cheaply.
    pub(crate) fn next(&mut self, want: impl Fn(u16) -> bool) -> io::Result<Next> {
        let remaining = self.len.saturating_sub(self.pos);
        if self.pos > self.len {
            let reason = format!("position is past the end of the file ({} bytes)", self.len);
            return Ok(Next::Damaged(Damage { position: self.pos, reason }));
        }
        if remaining == 0 {
            return Ok(Next::End);
        }
        let damaged = |reason: String| Ok(Next::Damaged(Damage { position: self.pos, reason }));
        if remaining < GO_LENGTH_BYTES {
            return damaged(format!(
                "torn record: {remaining} bytes at the end of the file, too few for a length"
            ));
        }
        let mut prefix = [0u8; 4];
        self.reader.read_exact(&mut prefix)?;
        let length = u64::from(u32::from_be_bytes(prefix));
        if !(GO_MESSAGE_HEADER_BYTES..=GO_RECORD_MAX_BYTES).contains(&length) {
            let reason = format!(
                "invalid record length {length} (valid: {GO_MESSAGE_HEADER_BYTES} to \
                 {GO_RECORD_MAX_BYTES}): the rest of the file ({remaining} bytes) is skipped"
            );
            return damaged(reason);
        }
        if length > remaining - GO_LENGTH_BYTES {
            let reason = format!(
                "torn record: length {length}, but only {} bytes follow",
                remaining - GO_LENGTH_BYTES
            );
            return damaged(reason);
        }
        let mut header = [0u8; GO_MESSAGE_HEADER_LEN];
        self.reader.read_exact(&mut header)?;
        let timestamp_ns = i64::from_be_bytes([
            header[0], header[1], header[2], header[3], header[4], header[5], header[6], header[7],
        ]);
        let attempts = u16::from_be_bytes([header[8], header[9]]);
        let body_len = length - GO_MESSAGE_HEADER_BYTES;
        let message = if want(attempts) {
            // At most FORMAT_MAX_BODY_BYTES, checked above.
            let mut body = vec![0u8; usize::try_from(body_len).unwrap_or(usize::MAX)];
            self.reader.read_exact(&mut body)?;
            Some(GoMessage { timestamp_ns, attempts, body })
        } else {
            let skip = i64::try_from(body_len).map_err(io::Error::other)?;
            self.reader.seek_relative(skip)?;
            None
        };
        self.pos += GO_LENGTH_BYTES + length;
        Ok(Next::Message { attempts, message })
    }
}

/// Messages handed to the sink at most at once.
pub(crate) const BATCH_RECORDS_MAX: usize = 1024;
/// Body bytes handed to the sink at most at once (a single larger message goes alone).
pub(crate) const BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;

/// One file as a pass over a queue read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct FileRead {
    pub(crate) file: PathBuf,
    pub(crate) from_position: u64,
    pub(crate) messages: u64,
    pub(crate) bad: bool,
}

/// What a pass over a queue's spans read.
#[derive(Debug, Default)]
pub(crate) struct QueueRead {
    pub(crate) files: Vec<FileRead>,
    pub(crate) findings: Vec<Finding>,
    pub(crate) messages: u64,
    pub(crate) body_bytes: u64,
    /// Messages with an attempts count above 0 among those taken.
    pub(crate) attempted: u64,
}

/// Reads `spans` in order and hands the messages `want` accepts to `sink` in bounded batches.
/// Damage ends a file and is recorded; an I/O error reading a file too. An error of `sink`
/// stops the pass.
pub(crate) fn read_queue(
    spans: &[Span],
    want: impl Fn(u16) -> bool,
    sink: &mut dyn FnMut(&[GoMessage]) -> anyhow::Result<()>,
) -> anyhow::Result<QueueRead> {
    let mut read = QueueRead::default();
    let mut batch: Vec<GoMessage> = Vec::with_capacity(BATCH_RECORDS_MAX);
    let mut batch_bytes = 0;
    for span in spans {
        let mut file = FileRead {
            file: span.path.clone(),
            from_position: span.start,
            messages: 0,
            bad: span.bad,
        };
        let mut reader = match SpanReader::open(span) {
            Ok(reader) => reader,
            Err(error) => {
                let what = format!("cannot be read: {error}; its messages are not imported");
                read.findings.push(Finding::loss(Some(&span.path), None, what));
                continue;
            }
        };
        loop {
            let position = reader.position();
            match reader.next(&want) {
                Ok(Next::End) => break,
                Ok(Next::Damaged(damage)) => {
                    read.findings.push(Finding::loss(
                        Some(&span.path),
                        Some(damage.position),
                        damage.reason,
                    ));
                    break;
                }
                Err(error) => {
                    let what = format!("read error: {error}; the rest of the file is skipped");
                    read.findings.push(Finding::loss(Some(&span.path), Some(position), what));
                    break;
                }
                Ok(Next::Message { message: None, .. }) => {}
                Ok(Next::Message { attempts, message: Some(message) }) => {
                    file.messages += 1;
                    read.messages += 1;
                    read.attempted += u64::from(attempts > 0);
                    read.body_bytes += message.body.len() as u64;
                    batch_bytes += message.body.len();
                    batch.push(message);
                    if batch.len() >= BATCH_RECORDS_MAX || batch_bytes >= BATCH_BYTES_MAX {
                        sink(&batch)?;
                        batch.clear();
                        batch_bytes = 0;
                    }
                }
            }
        }
        read.files.push(file);
    }
    if !batch.is_empty() {
        sink(&batch)?;
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_split_from_the_right() {
        // Goal: queue names may contain dots and even ".diskqueue.". Method: parse such names.
        assert_eq!(parse_data_file_name("t.diskqueue.000001.dat"), Some(("t", 1, false)));
        assert_eq!(
            parse_data_file_name("a.diskqueue.b:c.diskqueue.088058379.dat.bad"),
            Some(("a.diskqueue.b:c", 88_058_379, true))
        );
        assert_eq!(parse_data_file_name("t.diskqueue.meta.dat"), None);
        assert_eq!(parse_data_file_name("t.diskqueue.01.dat"), None, "at least 6 digits");
        assert_eq!(parse_data_file_name("nsqd.dat"), None);
    }

    #[test]
    fn meta_files_parse_as_go_writes_them_and_refuse_garbage() {
        // Goal: the meta format of NSQ.md §7.1. Method: parse Go's example and broken variants.
        let meta = parse_meta("0\n0,46347\n0,46347\n").unwrap();
        assert_eq!(
            (meta.read_file, meta.read_pos, meta.write_file, meta.write_pos),
            (0, 46_347, 0, 46_347)
        );
        for text in ["", "1\n", "1\n0,1\n", "x\n0,0\n0,0\n", "1\n0;0\n0,0\n", "1\n-1,0\n0,0\n"] {
            assert!(parse_meta(text).is_err(), "{text:?}");
        }
    }
}
