//! `--nsqd-tcp-address`: republishing over NSQ's TCP protocol V2, one batch in flight at a time.
//!
//! The connection sends the magic, IDENTIFYs with feature negotiation (no TLS, no compression)
//! and then sends each batch as MPUB (a batch of one as PUB) and waits for its `OK`. Commands
//! are encoded and frames decoded by the `protocol` crate. A `_heartbeat_` is answered with NOP;
//! an error frame (`E_*`) stops the replay with its text. NSQ's IDENTIFY answer does not say
//! the server's `--max-msg-size` or `--max-body-size`, so batches are cut at `--max-body-size`
//! (nsqd's default unless told otherwise), and a message the server finds too large stops the
//! replay with the server's error.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use protocol::command::Command;
use protocol::frame::{Frame, decode_frame};
use protocol::identify::{IdentifyRequest, IdentifyResponse};

use super::sink::Sink;

/// Largest frame accepted from the server: responses here are `OK`, errors, heartbeats and the
/// IDENTIFY answer, all small.
const RESPONSE_FRAME_MAX_BYTES: u32 = 1024 * 1024;
/// How long to wait for the server's answer (or to write a batch) before giving up.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes read from the socket per call.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Frames read while waiting for one answer (heartbeats and the like) before giving up.
const FRAMES_PER_ANSWER_MAX: usize = 1024;
/// How long the connection may stay silent while replay reads without publishing (a long
/// filtered stretch) before a NOP is sent: nsqd drops a client silent for two heartbeat
/// intervals (60 s by default).
const IDLE_NOP_INTERVAL: Duration = Duration::from_secs(10);

/// A producer connection to one nsqd.
#[derive(Debug)]
pub(crate) struct NsqdSink {
    address: String,
    topic: String,
    stream: TcpStream,
    received: BytesMut,
    max_body_bytes: u64,
    last_sent: Instant,
    idle_nop_interval: Duration,
}

impl NsqdSink {
    /// Connects and IDENTIFYs. `max_body_bytes` is the server's `--max-body-size`.
    pub(crate) fn connect(address: &str, topic: &str, max_body_bytes: u64) -> anyhow::Result<Self> {
        let stream =
            TcpStream::connect(address).with_context(|| format!("cannot connect to {address}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut sink = Self {
            address: address.to_owned(),
            topic: topic.to_owned(),
            stream,
            received: BytesMut::new(),
            max_body_bytes,
            last_sent: Instant::now(),
            idle_nop_interval: IDLE_NOP_INTERVAL,
        };
        sink.send(protocol::MAGIC_V2)?;
        let identify = IdentifyRequest {
            client_id: "nsq-fsck".into(),
            user_agent: format!("nsq-fsck/{}", env!("CARGO_PKG_VERSION")),
            feature_negotiation: true,
            ..IdentifyRequest::default()
        };
        let json = serde_json::to_vec(&identify)?;
        sink.send(&Command::Identify(&json).to_bytes())?;
        let answer = sink.answer("IDENTIFY")?;
        // A server without feature negotiation answers plain OK.
        if &answer[..] != protocol::OK {
            let negotiated: IdentifyResponse = serde_json::from_slice(&answer)
                .with_context(|| format!("{address}: unreadable IDENTIFY answer"))?;
            if negotiated.auth_required {
                bail!("nsqd at {address} requires AUTH, which replay does not send");
            }
        }
        Ok(sink)
    }

    fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).with_context(|| format!("writing to {}", self.address))?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Takes the frames that have arrived without waiting: heartbeats are dropped (the caller
    /// sends a NOP next), an error frame is an error. Bounded by what the socket holds.
    fn drain_arrived(&mut self) -> anyhow::Result<()> {
        self.stream.set_nonblocking(true)?;
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        let read = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    break Err(anyhow::anyhow!("nsqd at {} closed the connection", self.address));
                }
                Ok(got) => self.received.extend_from_slice(&chunk[..got]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
                Err(error) => {
                    break Err(error).with_context(|| format!("reading from {}", self.address));
                }
            }
            if self.received.len() >= READ_CHUNK_BYTES {
                break Ok(());
            }
        };
        self.stream.set_nonblocking(false)?;
        read?;
        while let Some(frame) = decode_frame(&mut self.received, RESPONSE_FRAME_MAX_BYTES)
            .with_context(|| format!("bad frame from {}", self.address))?
        {
            match frame {
                Frame::Response(body) if &body[..] == protocol::HEARTBEAT => {}
                Frame::Error(text) => {
                    bail!("nsqd at {} sent {}", self.address, String::from_utf8_lossy(&text))
                }
                other => bail!("nsqd at {} sent {other:?} unasked", self.address),
            }
        }
        Ok(())
    }

    /// The next response frame that is not a heartbeat (answered with NOP). An error frame is
    /// an error naming `what` it answered.
    fn answer(&mut self, what: &str) -> anyhow::Result<Bytes> {
        for _ in 0..FRAMES_PER_ANSWER_MAX {
            match self.frame()? {
                Frame::Response(body) if &body[..] == protocol::HEARTBEAT => {
                    self.send(&Command::Nop.to_bytes())?;
                }
                Frame::Response(body) => return Ok(body),
                Frame::Error(text) => {
                    bail!(
                        "nsqd at {} refused {what}: {}",
                        self.address,
                        String::from_utf8_lossy(&text)
                    )
                }
                Frame::Message(_) => bail!("nsqd at {} sent a message to a producer", self.address),
            }
        }
        bail!(
            "nsqd at {} sent {FRAMES_PER_ANSWER_MAX} frames without answering {what}",
            self.address
        )
    }

    fn frame(&mut self) -> anyhow::Result<Frame> {
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        loop {
            let decoded = decode_frame(&mut self.received, RESPONSE_FRAME_MAX_BYTES)
                .with_context(|| format!("bad frame from {}", self.address))?;
            if let Some(frame) = decoded {
                return Ok(frame);
            }
            let got = self
                .stream
                .read(&mut chunk)
                .with_context(|| format!("reading from {}", self.address))?;
            if got == 0 {
                bail!("nsqd at {} closed the connection", self.address);
            }
            self.received.extend_from_slice(&chunk[..got]);
        }
    }
}

impl Sink for NsqdSink {
    fn publish(&mut self, bodies: &[Bytes]) -> anyhow::Result<()> {
        let topic = self.topic.clone();
        let command = match bodies {
            [body] => Command::Pub { topic: &topic, body }.to_bytes(),
            _ => {
                let bodies: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
                Command::Mpub { topic: &topic, bodies: &bodies }.to_bytes()
            }
        };
        self.send(&command)?;
        let what = format!("a batch of {} messages", bodies.len());
        let answer = self.answer(&what)?;
        if &answer[..] != protocol::OK {
            bail!(
                "nsqd at {} answered {what} with {:?}",
                self.address,
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(())
    }

    fn idle(&mut self) -> anyhow::Result<()> {
        if self.last_sent.elapsed() < self.idle_nop_interval {
            return Ok(());
        }
        self.drain_arrived()?;
        self.send(&Command::Nop.to_bytes())
    }

    /// The MPUB body is `[count]([size][body])*`: 4 bytes, plus 4 per body.
    fn max_batch_bytes(&self) -> u64 {
        self.max_body_bytes.saturating_sub(4).min(super::sink::BATCH_BYTES_MAX)
    }

    /// Every batch was acknowledged: a producer just closes (CLS is for subscribers).
    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        // The connection is done either way; a failed shutdown loses nothing.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        Ok(())
    }

    fn describe(&self) -> String {
        format!("topic {:?} of nsqd at {}", self.topic, self.address)
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use bytes::BytesMut;
    use protocol::frame::{FrameType, put_frame};

    use super::*;

    /// Reads from `stream` until `want` bytes have arrived.
    fn read_exactly(stream: &mut TcpStream, want: usize) -> Vec<u8> {
        let mut buf = vec![0u8; want];
        stream.read_exact(&mut buf).unwrap();
        buf
    }

    fn frame(frame_type: FrameType, data: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        put_frame(&mut buf, frame_type, data);
        buf
    }

    #[test]
    fn a_heartbeat_is_answered_with_nop_and_an_error_frame_stops_with_its_text() {
        // Goal: the client keeps the connection alive through heartbeats and idle stretches,
        // and reports the server's E_* text. Method: a scripted server on loopback answers
        // IDENTIFY with a heartbeat then OK, checks the NOP, checks the idle NOP (sent only
        // once the idle interval, here zero, has passed), then answers the PUB with an error.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            assert_eq!(read_exactly(&mut stream, 4), protocol::MAGIC_V2);
            assert_eq!(read_exactly(&mut stream, 9), b"IDENTIFY\n");
            let size =
                protocol::command::body_size(read_exactly(&mut stream, 4).try_into().unwrap());
            read_exactly(&mut stream, usize::try_from(size).unwrap());
            stream.write_all(&frame(FrameType::Response, protocol::HEARTBEAT)).unwrap();
            assert_eq!(read_exactly(&mut stream, 4), b"NOP\n");
            stream.write_all(&frame(FrameType::Response, protocol::OK)).unwrap();
            assert_eq!(read_exactly(&mut stream, 4), b"NOP\n", "the idle keep-alive");
            let expected = Command::Pub { topic: "t", body: b"hello" }.to_bytes();
            assert_eq!(read_exactly(&mut stream, expected.len()), &expected[..]);
            let error = b"E_BAD_MESSAGE PUB message too big 5 > 1";
            stream.write_all(&frame(FrameType::Error, error)).unwrap();
        });
        let mut sink = NsqdSink::connect(&address, "t", 5 << 20).unwrap();
        sink.idle().unwrap();
        assert!(sink.last_sent.elapsed() < IDLE_NOP_INTERVAL, "nothing sent: not idle yet");
        sink.idle_nop_interval = Duration::ZERO;
        sink.idle().unwrap();
        let error = sink.publish(&[Bytes::from_static(b"hello")]).unwrap_err();
        assert!(error.to_string().contains("E_BAD_MESSAGE PUB message too big"), "{error:#}");
        server.join().unwrap();
    }
}
