//! A blocking protocol V2 connection for the benchmark: commands out, frames parsed in place out
//! of one large read buffer, heartbeats answered. Blocking sockets and one thread per connection,
//! as NSQ's bench_writer and bench_reader use one goroutine per connection: the client must cost
//! the server as little CPU as possible, since both share the machine.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Buf as _;
use protocol::command::Command;
use protocol::frame::{FRAME_HEADER_LEN, FrameType, MESSAGE_HEADER_LEN};

/// Frames larger than this are taken for a broken stream.
const MAX_FRAME_BYTES: usize = 64 << 20;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 256 << 10;

/// One frame, borrowed from the connection's read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameRef<'a> {
    Response(&'a [u8]),
    Error(&'a [u8]),
    Message { id: &'a [u8; protocol::MESSAGE_ID_LEN], body: &'a [u8] },
}

/// A V2 connection with the magic and IDENTIFY sent.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    start: usize,
    /// End of the bytes read into `buf`.
    end: usize,
}

impl Conn {
    /// Connects, sends the magic and an IDENTIFY like NSQ's bench tools (`role` is "writer" or
    /// "reader"), and reads its OK.
    pub fn open(addr: SocketAddr, role: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .with_context(|| format!("connecting to nsqd at {addr}"))?;
        stream.set_nodelay(true)?;
        let mut conn = Conn { stream, buf: vec![0; READ_CHUNK * 2], start: 0, end: 0 };
        let identify = format!(
            r#"{{"client_id":"{role}","hostname":"{role}","user_agent":"nsq-bench/{}"}}"#,
            env!("CARGO_PKG_VERSION")
        );
        let mut out = protocol::MAGIC_V2.to_vec();
        out.extend_from_slice(&Command::Identify(identify.as_bytes()).to_bytes());
        conn.write(&out)?;
        conn.expect_ok("IDENTIFY")?;
        Ok(conn)
    }

    /// Makes reads give up after `timeout`, so a reader can notice the end of its run.
    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn send(&mut self, command: Command<'_>) -> io::Result<()> {
        self.write(&command.to_bytes())
    }

    /// Reads the next response that is not a heartbeat (answering heartbeats with NOP) and fails
    /// unless it is `OK`.
    pub fn expect_ok(&mut self, what: &str) -> anyhow::Result<()> {
        loop {
            if !self.fill()? {
                bail!("nsqd closed the connection before answering {what}");
            }
            let mut heartbeat = false;
            let outcome = match self.next_frame()? {
                None => continue,
                Some(FrameRef::Response(b"OK")) => Ok(()),
                Some(FrameRef::Response(data)) if data == protocol::HEARTBEAT => {
                    heartbeat = true;
                    Ok(())
                }
                Some(FrameRef::Response(data)) => Err(anyhow::anyhow!(
                    "{what}: unexpected response {}",
                    String::from_utf8_lossy(data)
                )),
                Some(FrameRef::Error(data)) => {
                    Err(anyhow::anyhow!("{what}: nsqd answered {}", String::from_utf8_lossy(data)))
                }
                Some(FrameRef::Message { .. }) => {
                    Err(anyhow::anyhow!("{what}: unexpected message"))
                }
            };
            if heartbeat {
                self.send(Command::Nop)?;
                continue;
            }
            return outcome;
        }
    }

    /// Makes sure at least one whole frame is buffered, reading as needed. Returns false at the
    /// end of the stream. A read timeout is returned as an error of kind `WouldBlock` or
    /// `TimedOut`.
    pub fn fill(&mut self) -> io::Result<bool> {
        while !self.has_frame()? {
            if !self.read_more()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads once from the socket into the buffer (compacting or growing it first if needed).
    /// Returns false at the end of the stream.
    pub fn read_more(&mut self) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end < READ_CHUNK {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < READ_CHUNK {
                self.buf.resize(self.end + READ_CHUNK, 0);
            }
        }
        let read = self.stream.read(&mut self.buf[self.end..])?;
        self.end += read;
        Ok(read > 0)
    }

    fn has_frame(&self) -> io::Result<bool> {
        let pending = &self.buf[self.start..self.end];
        let Some(size) = pending.get(..4) else { return Ok(false) };
        let size = (&size[..]).get_u32() as usize;
        if !(4..=MAX_FRAME_BYTES).contains(&size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad frame size {size}"),
            ));
        }
        Ok(pending.len() >= 4 + size)
    }

    /// Takes the next whole frame out of the buffer, or `None` if none is buffered whole.
    pub fn next_frame(&mut self) -> io::Result<Option<FrameRef<'_>>> {
        if !self.has_frame()? {
            return Ok(None);
        }
        let pending = &self.buf[self.start..self.end];
        let mut header = &pending[..FRAME_HEADER_LEN];
        let size = header.get_u32() as usize;
        let code = header.get_i32();
        let data = &pending[FRAME_HEADER_LEN..4 + size];
        self.start += 4 + size;
        let frame = match FrameType::from_code(code) {
            Some(FrameType::Response) => FrameRef::Response(data),
            Some(FrameType::Error) => FrameRef::Error(data),
            Some(FrameType::Message) => {
                if data.len() < MESSAGE_HEADER_LEN {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "short message frame"));
                }
                let id = data[10..MESSAGE_HEADER_LEN].try_into().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "short message frame")
                })?;
                FrameRef::Message { id, body: &data[MESSAGE_HEADER_LEN..] }
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown frame type {code}"),
                ));
            }
        };
        Ok(Some(frame))
    }
}

/// True for the error a read timeout gives.
pub fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}
