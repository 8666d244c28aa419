//! `v2_command`: protocol V2 as nsqd reads it, over arbitrary bytes: command lines, the state
//! they change, body sizes, IDENTIFY's JSON and negotiation, MPUB bodies, and the compressed
//! stream IDENTIFY can switch to; and, in client mode, the server frames a client decodes.
//!
//! Input: a mode byte, then the stream. Mode bits:
//! - bit 0: client mode: the bytes are server frames, decoded with [`decode_frame`];
//! - bit 1: small limits (message, body and RDY maximums), so the "too big" checks are reached;
//! - bit 2: TLS is required and the connection has not upgraded;
//! - bits 3-5: compressed bytes arrive this many at a time (0: all at once).
//!
//! The connection is simulated exactly as `server/src/tcp/connection.rs` runs it: a line of at
//! most [`MAX_LINE_BYTES`], split as nsqd splits it, checked by [`server::v2::parse_command`]
//! (the server's own code) against the state; then the body its request calls for, with
//! [`server::v2::checked_body_len`] or [`server::v2::message_body_len`],
//! [`server::v2::decode_identify`], [`server::v2::negotiate`] and
//! [`protocol::mpub::decode_mpub_ranges`]. A fatal error ends the stream, as it ends the
//! connection. Checked:
//! - nothing panics; every body size is checked against its limit before a byte of the body is
//!   read, and the decompressed stream is capped;
//! - every error is one of nsqd's codes, which a client's parser reads back;
//! - a request re-encoded by the client's encoder ([`Command`]) parses back to the same request;
//!   an MPUB body that decodes re-encodes to exactly the same bytes, its messages within the
//!   limits; an IDENTIFY request survives a JSON round trip;
//! - in client mode, every frame that decodes re-encodes to the same bytes, and a size above
//!   the limit is refused before it is buffered.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use protocol::command::{Command, body_size, split_params, trim_line};
use protocol::compression::{Compression, Decompressor};
use protocol::frame::{Frame, FrameType, decode_frame, put_frame, put_message};
use protocol::mpub::decode_mpub_ranges;
use protocol::{ErrorCode, MAX_LINE_BYTES, ProtocolError};
use server::options::{DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_OUTPUT_BUFFER_SIZE};
use server::v2::{
    ClientState, Connection, Limits, Request, Settings, checked_body_len, decode_identify,
    message_body_len, negotiate, parse_command,
};

/// Longest input taken: a little over a maximal line.
pub const MAX_LEN: usize = MAX_LINE_BYTES + 4096;
/// Most bytes the decompressors may produce for one input.
const MAX_DECOMPRESSED: usize = 1 << 20;
/// Most nested compression upgrades followed (nsqd wraps its reader again on each).
const MAX_LAYERS: usize = 3;
/// Largest frame a client accepts in client mode.
const MAX_FRAME: u32 = 64 * 1024;

fn options() -> &'static server::Options {
    static OPTIONS: OnceLock<server::Options> = OnceLock::new();
    OPTIONS.get_or_init(|| server::Options::parse_args(["nsqd"]).expect("nsqd's default options"))
}

/// A source of bytes, as the connection's reader sees them.
trait Source {
    /// Fills some of `out`; `Ok(0)` at the end; `Err` when the stream is unusable.
    fn read(&mut self, out: &mut [u8]) -> Result<usize, ()>;
}

/// The bytes of the input, arriving `chunk` at a time.
struct Raw<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Source for Raw<'_> {
    fn read(&mut self, out: &mut [u8]) -> Result<usize, ()> {
        let n = out.len().min(self.data.len()).min(self.chunk);
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// What a compressed stream decodes to: the server's `Decompressing` reader, synchronously.
struct Decompressing<'a> {
    inner: Box<dyn Source + 'a>,
    decompressor: Decompressor,
    input: Vec<u8>,
    used: usize,
    eof: bool,
    produced: usize,
}

impl Source for Decompressing<'_> {
    fn read(&mut self, out: &mut [u8]) -> Result<usize, ()> {
        loop {
            if out.is_empty() || self.decompressor.ended() || self.produced >= MAX_DECOMPRESSED {
                return Ok(0);
            }
            let (used, produced) =
                self.decompressor.decompress(&self.input[self.used..], out).map_err(|_| ())?;
            self.used += used;
            if produced > 0 {
                assert!(produced <= out.len());
                self.produced += produced;
                return Ok(produced);
            }
            if used > 0 {
                continue;
            }
            self.input.drain(..self.used);
            self.used = 0;
            if self.eof {
                return if self.input.is_empty() { Ok(0) } else { Err(()) };
            }
            if self.input.len() > protocol::compression::MAX_SNAPPY_CHUNK + 16 * 1024 {
                return Err(());
            }
            let filled = self.input.len();
            self.input.resize(filled + 16 * 1024, 0);
            let got = self.inner.read(&mut self.input[filled..])?;
            self.input.truncate(filled + got);
            self.eof = got == 0;
        }
    }
}

/// The connection's buffered reader over the current source.
struct Reader<'a> {
    source: Box<dyn Source + 'a>,
    buffer: Vec<u8>,
    layers: usize,
}

impl<'a> Reader<'a> {
    /// Makes sure `n` bytes are buffered, if the stream has them.
    fn fill(&mut self, n: usize) -> bool {
        let mut chunk = [0u8; 4096];
        while self.buffer.len() < n {
            match self.source.read(&mut chunk) {
                Ok(0) | Err(()) => return false,
                Ok(got) => self.buffer.extend_from_slice(&chunk[..got]),
            }
        }
        true
    }

    /// The next line with its `\n`; `Err` when it is too long or the stream ends inside it.
    fn line(&mut self) -> Result<Option<Vec<u8>>, ()> {
        let mut scanned = 0;
        loop {
            if let Some(end) = self.buffer[scanned..].iter().position(|&b| b == b'\n') {
                let len = scanned + end + 1;
                if len > MAX_LINE_BYTES {
                    return Err(());
                }
                return Ok(Some(self.buffer.drain(..len).collect()));
            }
            scanned = self.buffer.len();
            if scanned > MAX_LINE_BYTES {
                return Err(());
            }
            if !self.fill(scanned + 1) {
                return if self.buffer.is_empty() { Ok(None) } else { Err(()) };
            }
        }
    }

    fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        self.fill(n).then(|| self.buffer.drain(..n).collect())
    }

    fn size(&mut self) -> Option<i32> {
        let bytes = self.exact(4)?;
        Some(body_size([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// From now on the bytes arrive compressed (the buffered ones included), `chunk` at a
    /// time.
    fn upgrade(&mut self, compression: Compression, chunk: usize) -> bool {
        if self.layers >= MAX_LAYERS {
            return false;
        }
        let ahead = std::mem::take(&mut self.buffer);
        let inner = std::mem::replace(&mut self.source, Box::new(Raw { data: &[], chunk: 1 }));
        let inner: Box<dyn Source + 'a> =
            Box::new(Trickle { inner: Box::new(Ahead { ahead, inner }), chunk });
        self.source = Box::new(Decompressing {
            inner,
            decompressor: Decompressor::new(compression),
            input: Vec::new(),
            used: 0,
            eof: false,
            produced: 0,
        });
        self.layers += 1;
        true
    }
}

/// Bytes read ahead, then the rest of a source.
struct Ahead<'a> {
    ahead: Vec<u8>,
    inner: Box<dyn Source + 'a>,
}

impl Source for Ahead<'_> {
    fn read(&mut self, out: &mut [u8]) -> Result<usize, ()> {
        if self.ahead.is_empty() {
            return self.inner.read(out);
        }
        let n = out.len().min(self.ahead.len());
        out[..n].copy_from_slice(&self.ahead[..n]);
        self.ahead.drain(..n);
        Ok(n)
    }
}

/// An error as the client sees it: the frame's code reads back.
fn check_error(error: &ProtocolError) {
    let bytes = error.to_bytes();
    assert_eq!(ErrorCode::parse(&bytes), Some(error.code), "error text {error}");
    assert!(error.is_fatal(), "a line or body check gave a non-fatal error: {error}");
}

/// The request the client's encoding of `command` parses to.
fn reparsed<'a>(encoded: &'a [u8], connection: &Connection, limits: &Limits) -> Request<'a> {
    let end = encoded.iter().position(|&b| b == b'\n').expect("an encoded command ends its line");
    let params = split_params(trim_line(&encoded[..=end]));
    match parse_command(&params, connection, limits) {
        Ok(request) => request,
        Err(error) => panic!("a re-encoded command fails: {error}"),
    }
}

fn check_round_trip(request: &Request<'_>, connection: &Connection, limits: &Limits) {
    let millis = |d: Duration| u64::try_from(d.as_millis()).expect("milliseconds");
    let command = match request {
        Request::Sub { topic, channel } => Command::Sub { topic, channel },
        Request::Pub { kind: server::v2::PubKind::Pub, topic, .. } => {
            Command::Pub { topic, body: b"" }
        }
        Request::Pub { kind: server::v2::PubKind::Dpub, topic, defer } => {
            Command::Dpub { topic, defer_ms: millis(*defer), body: b"" }
        }
        Request::Rdy(count) => Command::Rdy(*count),
        // An ID ending in `\r` loses it to the line's trim when re-encoded.
        Request::Fin(id) if id[15] != b'\r' => Command::Fin(id),
        Request::Touch(id) if id[15] != b'\r' => Command::Touch(id),
        Request::Req { id, delay, clamped_from } if id[15] != b'\r' => {
            Command::Req { id, timeout_ms: millis(clamped_from.unwrap_or(*delay)) }
        }
        Request::Cls => Command::Cls,
        Request::Nop => Command::Nop,
        _ => return,
    };
    let encoded = command.to_bytes();
    assert_eq!(&reparsed(&encoded, connection, limits), request, "{command:?}");
}

pub fn run(data: &[u8]) {
    if data.len() > MAX_LEN {
        return;
    }
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    if mode & 1 != 0 {
        client_frames(stream);
        return;
    }
    let options = options();
    let mut limits = Limits::from_options(options);
    if mode & 2 != 0 {
        limits.max_msg_size = 100;
        limits.max_body_size = 600;
        limits.max_rdy_count = 100;
        limits.max_req_timeout = Duration::from_secs(60);
    }
    let chunk = match (mode >> 3) & 7 {
        0 => usize::MAX,
        n => usize::from(n),
    };
    let mut connection = Connection {
        state: ClientState::Init,
        tls_pending: mode & 4 != 0,
        heartbeats: true,
        has_consumer: false,
    };
    let mut settings = Settings {
        heartbeat_interval: Some(DEFAULT_HEARTBEAT_INTERVAL),
        output_buffer_size: usize::try_from(DEFAULT_OUTPUT_BUFFER_SIZE).expect("buffer size"),
        output_buffer_timeout: Some(options.output_buffer_timeout),
        sample_rate: 0,
        msg_timeout: options.msg_timeout,
    };
    let mut reader = Reader {
        source: Box::new(Raw { data: stream, chunk: usize::MAX }),
        buffer: Vec::new(),
        layers: 0,
    };
    loop {
        let Ok(Some(line)) = reader.line() else { return };
        let params = split_params(trim_line(&line));
        let request = match parse_command(&params, &connection, &limits) {
            Ok(request) => request,
            Err(error) => return check_error(&error),
        };
        check_round_trip(&request, &connection, &limits);
        let outcome = match request {
            Request::Identify => identify(&mut reader, &mut settings, &limits, chunk),
            Request::Auth => {
                // Read as nsqd reads it; without auth servers nsqd then answers E_AUTH_DISABLED.
                let max = limits.max_body_size;
                let _ = body(&mut reader, |size| {
                    checked_body_len(size, ErrorCode::BadBody, "AUTH", max, true)
                });
                Err(())
            }
            Request::Sub { .. } => {
                connection.state = ClientState::Subscribed;
                connection.has_consumer = true;
                Ok(())
            }
            Request::Pub { kind, .. } => {
                body(&mut reader, |size| message_body_len(kind, size, &limits)).map(drop)
            }
            Request::Mpub { ref topic } => mpub(&mut reader, topic, &limits),
            Request::Cls => {
                connection.state = ClientState::Closing;
                Ok(())
            }
            Request::Rdy(_)
            | Request::RdyIgnored
            | Request::Fin(_)
            | Request::Req { .. }
            | Request::Touch(_)
            | Request::Nop => Ok(()),
        };
        if outcome.is_err() {
            return;
        }
        connection.heartbeats = settings.heartbeat_interval.is_some();
    }
}

/// Reads a size, checks it with `check`, then reads the body; `Err` ends the connection.
fn body(
    reader: &mut Reader<'_>,
    check: impl FnOnce(i32) -> Result<usize, ProtocolError>,
) -> Result<Vec<u8>, ()> {
    let size = reader.size().ok_or(())?;
    let len = check(size).map_err(|error| check_error(&error))?;
    assert!(len > 0 && i32::try_from(len) == Ok(size), "size {size} taken as {len}");
    reader.exact(len).ok_or(())
}

fn identify(
    reader: &mut Reader<'_>,
    settings: &mut Settings,
    limits: &Limits,
    chunk: usize,
) -> Result<(), ()> {
    let max = limits.max_body_size;
    let body =
        body(reader, |size| checked_body_len(size, ErrorCode::BadBody, "IDENTIFY", max, true))?;
    let request = decode_identify(&body).map_err(|error| check_error(&error))?;
    let json = serde_json::to_vec(&request).expect("an IDENTIFY request encodes");
    assert_eq!(decode_identify(&json).as_ref(), Ok(&request), "IDENTIFY JSON round trip");
    *settings = negotiate(&request, *settings, limits).map_err(|reason| {
        check_error(&ProtocolError::new(ErrorCode::BadBody, format!("IDENTIFY {reason}")));
    })?;
    if !request.feature_negotiation {
        return Ok(());
    }
    // nsqd's choice of compression (commands.rs), then the switch of the stream.
    let options = options();
    let deflate = options.deflate && request.deflate;
    let snappy = options.snappy && request.snappy;
    let compression = match (deflate, snappy) {
        (true, true) => return Err(()),
        (true, false) => {
            let level = if request.deflate_level > 0 { request.deflate_level } else { 6 };
            let level = level.min(options.max_deflate_level);
            Compression::Deflate { level: u32::try_from(level).unwrap_or(6) }
        }
        (false, true) => Compression::Snappy,
        (false, false) => return Ok(()),
    };
    if reader.upgrade(compression, chunk) { Ok(()) } else { Err(()) }
}

/// A source read at most `chunk` bytes at a time (compressed bytes trickling in).
struct Trickle<'a> {
    inner: Box<dyn Source + 'a>,
    chunk: usize,
}

impl Source for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> Result<usize, ()> {
        let n = out.len().min(self.chunk);
        self.inner.read(&mut out[..n])
    }
}

fn mpub(reader: &mut Reader<'_>, topic: &str, limits: &Limits) -> Result<(), ()> {
    let (max_body, max_msg) = (limits.max_body_size, limits.max_msg_size);
    let body =
        body(reader, |size| checked_body_len(size, ErrorCode::BadBody, "MPUB", max_body, false))?;
    let ranges =
        decode_mpub_ranges(&body, max_msg, max_body).map_err(|error| check_error(&error))?;
    assert!(!ranges.is_empty());
    assert!(ranges.len() as u64 <= max_body.saturating_sub(4) / 5, "more messages than allowed");
    let mut at = 4;
    for range in &ranges {
        assert_eq!(range.start, at + 4, "messages follow each other");
        assert!(!range.is_empty() && range.len() as u64 <= max_msg, "message size {}", range.len());
        at = range.end;
    }
    assert_eq!(at, body.len(), "bytes after the last message");
    let bodies: Vec<&[u8]> = ranges.iter().map(|range| &body[range.clone()]).collect();
    let encoded = Command::Mpub { topic, bodies: &bodies }.to_bytes();
    let line_end = encoded.iter().position(|&b| b == b'\n').expect("a line") + 1;
    assert_eq!(&encoded[line_end + 4..], &body[..], "an MPUB body re-encodes differently");
    Ok(())
}

/// Server frames as a client decodes them.
fn client_frames(stream: &[u8]) {
    let mut buf = BytesMut::from(stream);
    loop {
        let before = buf.len();
        match decode_frame(&mut buf, MAX_FRAME) {
            Ok(Some(frame)) => {
                let used = before - buf.len();
                let start = stream.len() - before;
                let mut encoded = BytesMut::new();
                match &frame {
                    Frame::Response(data) => put_frame(&mut encoded, FrameType::Response, data),
                    Frame::Error(data) => put_frame(&mut encoded, FrameType::Error, data),
                    Frame::Message(m) => {
                        put_message(&mut encoded, m.timestamp_ns, m.attempts, &m.id, &m.body);
                    }
                }
                assert_eq!(
                    &encoded[..],
                    &stream[start..start + used],
                    "a frame re-encodes differently"
                );
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "a partial frame was consumed");
                assert!(buf.capacity() <= 2 * stream.len() + MAX_FRAME as usize + 64);
                return;
            }
            Err(error) => {
                assert!(!error.to_string().is_empty());
                return;
            }
        }
    }
}
