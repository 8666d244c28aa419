//! Hostile clients for the hostile-client test (`tests/hostile.rs`): raw connections that send
//! whatever they like and report how nsqd answered and when it hung up, generators of garbage
//! and of mutated commands, and what `/proc` says about a process's memory and this process's
//! descriptor limit.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use protocol::ErrorCode;
use protocol::command::Command;
use protocol::frame::{Frame, FrameError, decode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Frames larger than this are garbage here: nsqd's replies to hostile clients are small.
const MAX_FRAME_BYTES: u32 = 16 << 20;

/// How a connection ended, seen from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// nsqd closed it (FIN).
    Eof,
    /// nsqd reset it (it closed with unread input, or aborted).
    Reset,
    /// Still open when the wait ran out.
    TimedOut,
    /// nsqd sent bytes that are not a frame.
    BadFrame(FrameError),
    /// Another I/O error.
    Io(String),
}

/// What nsqd sent on a connection, and how it ended.
#[derive(Debug, Clone)]
pub struct Drained {
    pub frames: Vec<Frame>,
    pub end: End,
}

impl Drained {
    /// The codes of the error frames received, in order.
    pub fn error_codes(&self) -> Vec<ErrorCode> {
        self.frames.iter().filter_map(frame_error_code).collect()
    }

    /// The text of the error frames received.
    pub fn error_texts(&self) -> Vec<String> {
        self.frames
            .iter()
            .filter_map(|frame| match frame {
                Frame::Error(text) => Some(String::from_utf8_lossy(text).into_owned()),
                _ => None,
            })
            .collect()
    }

    /// Whether nsqd hung up (as opposed to the wait running out or garbage arriving).
    pub fn closed_by_server(&self) -> bool {
        matches!(self.end, End::Eof | End::Reset)
    }
}

/// The code of an error frame (`None` for other frames, or an error text naming no code).
pub fn frame_error_code(frame: &Frame) -> Option<ErrorCode> {
    match frame {
        Frame::Error(text) => ErrorCode::parse(text),
        _ => None,
    }
}

/// A raw TCP connection to nsqd that sends arbitrary bytes and reads whole frames.
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawConn {
    /// Connects; sends the V2 magic when `magic`.
    pub async fn connect(addr: SocketAddr, magic: bool) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = Self { stream, buf: BytesMut::new() };
        if magic {
            conn.send(protocol::MAGIC_V2).await?;
        }
        Ok(conn)
    }

    /// Connects with a receive buffer of about `bytes` (the kernel rounds it), sends the magic:
    /// a client that reads nothing then fills up after little more than nsqd's send buffer.
    pub async fn connect_small(addr: SocketAddr, bytes: u32) -> io::Result<Self> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_recv_buffer_size(bytes)?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = Self { stream, buf: BytesMut::new() };
        conn.send(protocol::MAGIC_V2).await?;
        Ok(conn)
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    pub async fn command(&mut self, command: Command<'_>) -> io::Result<()> {
        self.send(&command.to_bytes()).await
    }

    /// Tells nsqd that nothing more will come (a FIN on our side); reading goes on.
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }

    /// The next frame, heartbeats included, or how the connection ended if it did first.
    pub async fn next_frame(&mut self, wait: Duration) -> Result<Frame, End> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match decode_frame(&mut self.buf, MAX_FRAME_BYTES) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(error) => return Err(End::BadFrame(error)),
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf));
            match read.await {
                Err(_) => return Err(End::TimedOut),
                Ok(Ok(0)) => return Err(End::Eof),
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(End::Reset);
                }
                Ok(Err(e)) => return Err(End::Io(e.to_string())),
            }
        }
    }

    /// The next frame that is not a heartbeat; heartbeats are answered with NOP.
    pub async fn next_reply(&mut self, wait: Duration) -> Result<Frame, End> {
        loop {
            match self.next_frame(wait).await? {
                Frame::Response(body) if body == protocol::HEARTBEAT => {
                    self.command(Command::Nop).await.map_err(|e| End::Io(e.to_string()))?;
                }
                frame => return Ok(frame),
            }
        }
    }

    /// Reads frames until nsqd hangs up, or `wait` has passed.
    pub async fn drain(&mut self, wait: Duration) -> Drained {
        let deadline = tokio::time::Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await {
                Ok(frame) => frames.push(frame),
                Err(end) => return Drained { frames, end },
            }
        }
    }

    /// Reads and discards bytes (compressed frames, say) until nsqd hangs up or `wait` has
    /// passed; returns how it ended and how many bytes came.
    pub async fn drain_raw(&mut self, wait: Duration) -> (End, usize) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut total = std::mem::take(&mut self.buf).len();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk));
            match read.await {
                Err(_) => return (End::TimedOut, total),
                Ok(Ok(0)) => return (End::Eof, total),
                Ok(Ok(n)) => total += n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return (End::Reset, total);
                }
                Ok(Err(e)) => return (End::Io(e.to_string()), total),
            }
        }
    }

    /// Whether the connection is still open, without waiting: no EOF or error is pending.
    /// Bytes that arrived (heartbeats) are kept for the next read.
    pub fn is_open_now(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.try_read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }

    /// Drops the connection with a reset (`SO_LINGER` 0), as a crashed client would.
    pub fn abort(self) {
        let _ = self.stream.set_zero_linger();
        drop(self.stream);
    }
}

/// Random bytes, a few of them newlines and spaces so that nsqd sees many short "commands".
pub fn garbage(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| match rng.u8(..16) {
            0 => b'\n',
            1 => b' ',
            2 => rng.u8(b'A'..=b'Z'),
            _ => rng.u8(..),
        })
        .collect()
}

/// A valid command of a random kind, on `topic`/`channel` (bodies up to a few KiB).
pub fn valid_command(rng: &mut fastrand::Rng, topic: &str, channel: &str) -> Vec<u8> {
    let body: Vec<u8> = (0..rng.usize(1..2048)).map(|_| rng.u8(..)).collect();
    let mut id = [0u8; 16];
    for b in &mut id {
        *b = b"0123456789abcdef"[rng.usize(..16)];
    }
    let bodies: Vec<&[u8]> = (0..rng.usize(1..5)).map(|i| &body[..body.len() / (i + 1)]).collect();
    let identify =
        br#"{"client_id":"hostile","heartbeat_interval":1000,"feature_negotiation":true}"#;
    let command = match rng.u8(..10) {
        0 => Command::Pub { topic, body: &body },
        1 => Command::Mpub { topic, bodies: &bodies },
        2 => Command::Dpub { topic, defer_ms: rng.u64(..5000), body: &body },
        3 => Command::Sub { topic, channel },
        4 => Command::Rdy(rng.u64(..3000)),
        5 => Command::Fin(&id),
        6 => Command::Req { id: &id, timeout_ms: rng.u64(..10_000) },
        7 => Command::Touch(&id),
        8 => Command::Identify(identify),
        _ => Command::Cls,
    };
    command.to_bytes().to_vec()
}

/// `bytes` with 1 to 4 random mutations: a bit flipped, a byte inserted, deleted or replaced,
/// a 4-byte field overwritten with an extreme size, or the tail cut off.
pub fn mutate(rng: &mut fastrand::Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..rng.usize(1..=4) {
        if out.is_empty() {
            out.push(rng.u8(..));
            continue;
        }
        let at = rng.usize(..out.len());
        match rng.u8(..6) {
            0 => out[at] ^= 1 << rng.u8(..8),
            1 => out.insert(at, rng.u8(..)),
            2 => {
                out.remove(at);
            }
            3 => out[at] = rng.u8(..),
            4 => {
                let extreme = [0u32, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 1 << 30];
                let mut field = Vec::with_capacity(4);
                field.put_u32(extreme[rng.usize(..extreme.len())]);
                for (i, b) in field.into_iter().enumerate() {
                    if let Some(slot) = out.get_mut(at + i) {
                        *slot = b;
                    }
                }
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// A field of `/proc/<pid>/status` that is a size in kB (`VmRSS`, `VmHWM`, `VmPeak`...), in
/// bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let missing = || io::Error::new(io::ErrorKind::NotFound, format!("no {field} in status"));
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(missing)?;
    let kib: u64 = value
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{field}: {e}")))?;
    Ok(kib * 1024)
}

/// This process's soft limit on open files (children inherit it), if `/proc` says.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The number of sockets process `pid` has open (listening, connected, or any other kind).
pub fn open_sockets(pid: u32) -> io::Result<usize> {
    let mut sockets = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        // A descriptor closed meanwhile has no link any more: not a socket now.
        let target = std::fs::read_link(entry?.path()).unwrap_or_default();
        sockets += usize::from(target.to_string_lossy().starts_with("socket:"));
    }
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mutations_change_commands_and_stay_bounded() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut changed = 0;
        for _ in 0..1000 {
            let command = valid_command(&mut rng, "t", "c");
            let mutated = mutate(&mut rng, &command);
            assert!(mutated.len() <= command.len() + 4);
            changed += usize::from(mutated != command);
        }
        assert!(changed > 900, "only {changed} of 1000 mutations changed anything");
    }

    #[test]
    fn this_process_has_a_status_and_a_limit() {
        assert!(proc_status_bytes(std::process::id(), "VmRSS").unwrap() > 0);
        assert!(open_files_limit().unwrap() > 0);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(open_sockets(std::process::id()).unwrap() > 0);
        drop(listener);
    }
}
