//! A raw protocol V2 connection: commands out, frames in, heartbeats answered.

use std::net::SocketAddr;

use bytes::BytesMut;
use protocol::command::Command;
use protocol::frame::{Frame, decode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Frames larger than this are a protocol error here.
const MAX_FRAME_BYTES: u32 = 16 << 20;

/// One V2 connection, magic sent.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(protocol::MAGIC_V2).await?;
        Ok(Conn { stream, buf: BytesMut::new() })
    }

    pub async fn send(&mut self, command: Command<'_>) -> std::io::Result<()> {
        self.stream.write_all(&command.to_bytes()).await
    }

    /// Writes raw bytes (hostile input).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next frame that is not a heartbeat (heartbeats are answered with NOP).
    pub async fn frame(&mut self) -> std::io::Result<Frame> {
        loop {
            match decode_frame(&mut self.buf, MAX_FRAME_BYTES) {
                Ok(Some(Frame::Response(body))) if body == protocol::HEARTBEAT => {
                    self.send(Command::Nop).await?;
                    // The frame after the heartbeat may be buffered already.
                    continue;
                }
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(error) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, error));
                }
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Sends a command and expects `OK`.
    pub async fn expect_ok(&mut self, command: Command<'_>) -> std::io::Result<()> {
        self.send(command).await?;
        match self.frame().await? {
            Frame::Response(body) if body == "OK" => Ok(()),
            other => Err(std::io::Error::other(format!("expected OK, got {other:?}"))),
        }
    }
}
