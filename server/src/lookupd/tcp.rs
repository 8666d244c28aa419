//! Protocol V1 (NSQ.md §4.2): the magic `"  V1"`, then command lines, each answered with
//! `[u32 size][data]`. Every error is fatal: its text is sent, then the connection closes. When
//! a connection ends its peer leaves every registration, before the socket closes, so a client
//! that sees the close knows the registry no longer lists it.
//!
//! Bounds NSQ does not set: the magic must come within [`MAGIC_TIMEOUT`], a line is at most
//! [`MAX_LINE_BYTES`] (with its `\n`), and an IDENTIFY body at most [`MAX_IDENTIFY_BODY_BYTES`]
//! (NSQ allocates whatever size it is sent, and panics on a negative one).
//!
//! The checks of a line and of an IDENTIFY body are pure functions ([`parse_line`],
//! [`identify_body_len`], [`decode_identity`]), which the fuzz target `lookupd_command` drives.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use engine::names::is_valid_name;
use protocol::command::{body_size, split_params};
use protocol::lookup::{MAGIC_V1, PeerIdentity, put_response};
use protocol::{ErrorCode, MAX_LINE_BYTES, OK, ProtocolError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::Lookupd;
use super::registry::Peer;

/// How long a new connection may take to send the protocol magic.
const MAGIC_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest IDENTIFY body accepted. nsqd's is a few hundred bytes.
pub const MAX_IDENTIFY_BODY_BYTES: usize = 1024 * 1024;

/// Serves protocol V1 on `listener` until `shutdown` (see [`crate::serving::accept_loop`]).
pub(super) async fn serve(
    lookupd: Arc<Lookupd>,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    let connections = shutdown.child_token();
    crate::serving::accept_loop(listener, shutdown, connections, |stream, remote, exit| {
        connection(Arc::clone(&lookupd), stream, remote, exit)
    })
    .await;
}

async fn connection(
    lookupd: Arc<Lookupd>,
    stream: TcpStream,
    remote: SocketAddr,
    shutdown: CancellationToken,
) {
    let (read, writer) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut magic = [0u8; 4];
    let read = tokio::select! {
        () = shutdown.cancelled() => return,
        read = tokio::time::timeout(MAGIC_TIMEOUT, reader.read_exact(&mut magic)) => read,
    };
    if let Err(error) = read.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())) {
        tracing::error!("failed to read protocol version - {error}");
        return;
    }
    let magic_text = String::from_utf8_lossy(&magic);
    tracing::info!("CLIENT({remote}): desired protocol magic '{magic_text}'");
    let mut client = Client { lookupd, remote, reader, writer, peer: None };
    if &magic != MAGIC_V1 {
        tracing::error!("client({remote}) bad protocol magic '{magic_text}'");
        let _ = client.send(ErrorCode::BadProtocol.as_str().as_bytes()).await;
        let _ = client.writer.shutdown().await;
        return;
    }
    let ended = tokio::select! {
        () = shutdown.cancelled() => Ok(()),
        ended = client.run() => ended,
    };
    if let Err(error) = ended {
        tracing::error!("client({remote}) - {error}");
    }
    tracing::info!("PROTOCOL(V1): [{remote}] exiting ioloop");
    if let Some(peer) = &client.peer {
        client.lookupd.registry.remove_peer(peer);
    }
    // Only now, with the peer gone from the registry, does the client see the close.
    let _ = client.writer.shutdown().await;
}

/// A line as read.
enum Line {
    Command(Vec<u8>),
    TooLong,
    /// The client closed (a partial last line is dropped, as NSQ drops it).
    End,
}

struct Client {
    lookupd: Arc<Lookupd>,
    remote: SocketAddr,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Set by IDENTIFY.
    peer: Option<Arc<Peer>>,
}

fn bad_body(text: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadBody, text)
}

/// A topic or channel name parameter, if it is a valid one.
fn valid_name(param: &[u8]) -> Option<&str> {
    std::str::from_utf8(param).ok().filter(|name| is_valid_name(name))
}

/// The line without the white space around it, as Go's `strings.TrimSpace` takes it away.
pub fn trim_space(line: &[u8]) -> &[u8] {
    match std::str::from_utf8(line) {
        Ok(text) => text.trim().as_bytes(),
        Err(_) => line.trim_ascii(),
    }
}

/// A command line that passed its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupRequest<'a> {
    Ping,
    /// A body follows: its size ([`identify_body_len`]), then the JSON ([`decode_identity`]).
    Identify,
    Register {
        topic: &'a str,
        channel: Option<&'a str>,
    },
    Unregister {
        topic: &'a str,
        channel: Option<&'a str>,
    },
}

/// Checks a command line (after [`trim_space`]) in NSQ's order; `identified` tells whether the
/// connection has identified itself already.
pub fn parse_line(line: &[u8], identified: bool) -> Result<LookupRequest<'_>, ProtocolError> {
    let params = split_params(line);
    let command = params.first().copied().unwrap_or_default();
    let params = params.get(1..).unwrap_or_default();
    match command {
        b"PING" => Ok(LookupRequest::Ping),
        b"IDENTIFY" => {
            if identified {
                return Err(ProtocolError::invalid("cannot IDENTIFY again"));
            }
            Ok(LookupRequest::Identify)
        }
        b"REGISTER" => {
            let (topic, channel) = registration("REGISTER", params, identified)?;
            Ok(LookupRequest::Register { topic, channel })
        }
        b"UNREGISTER" => {
            let (topic, channel) = registration("UNREGISTER", params, identified)?;
            Ok(LookupRequest::Unregister { topic, channel })
        }
        other => {
            let command = String::from_utf8_lossy(other);
            Err(ProtocolError::invalid(format!("invalid command {command}")))
        }
    }
}

/// REGISTER's and UNREGISTER's checks, in NSQ's order: identified, a topic, valid names.
fn registration<'a>(
    command: &str,
    params: &[&'a [u8]],
    identified: bool,
) -> Result<(&'a str, Option<&'a str>), ProtocolError> {
    if !identified {
        return Err(ProtocolError::invalid("client must IDENTIFY"));
    }
    let Some(&topic) = params.first() else {
        return Err(ProtocolError::invalid(format!("{command} insufficient number of params")));
    };
    let topic = valid_name(topic).ok_or_else(|| {
        let topic = String::from_utf8_lossy(topic);
        let text = format!("{command} topic name '{topic}' is not valid");
        ProtocolError::new(ErrorCode::BadTopic, text)
    })?;
    let channel = match params.get(1).copied().unwrap_or_default() {
        b"" => None,
        channel => Some(valid_name(channel).ok_or_else(|| {
            let channel = String::from_utf8_lossy(channel);
            let text = format!("{command} channel name '{channel}' is not valid");
            ProtocolError::new(ErrorCode::BadChannel, text)
        })?),
    };
    Ok((topic, channel))
}

/// The length of an IDENTIFY body from its size field: at most [`MAX_IDENTIFY_BODY_BYTES`].
pub fn identify_body_len(size: [u8; 4]) -> Result<usize, ProtocolError> {
    let size = body_size(size);
    usize::try_from(size)
        .ok()
        .filter(|&len| len <= MAX_IDENTIFY_BODY_BYTES)
        .ok_or_else(|| bad_body(format!("IDENTIFY invalid body size {size}")))
}

/// The identity of an IDENTIFY body, with the fields nsqlookupd requires.
pub fn decode_identity(body: &[u8]) -> Result<PeerIdentity, ProtocolError> {
    let identity: PeerIdentity = serde_json::from_slice(body)
        .map_err(|_| bad_body("IDENTIFY failed to decode JSON body"))?;
    if !identity.is_complete() {
        return Err(bad_body("IDENTIFY missing fields"));
    }
    Ok(identity)
}

impl Client {
    /// The command loop. `Ok` when the client closed or a (fatal) error was sent.
    async fn run(&mut self) -> io::Result<()> {
        loop {
            let reply = match self.read_line().await? {
                Line::End => return Ok(()),
                Line::TooLong => Err(ProtocolError::invalid(format!(
                    "command line longer than {MAX_LINE_BYTES} bytes"
                ))),
                Line::Command(line) => self.exec(trim_space(&line)).await,
            };
            match reply {
                Ok(response) => self.send(&response).await?,
                Err(error) => {
                    tracing::error!("[{}] - {error}", self.remote);
                    return self.send(&error.to_bytes()).await;
                }
            }
        }
    }

    async fn read_line(&mut self) -> io::Result<Line> {
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX);
        (&mut self.reader).take(limit).read_until(b'\n', &mut line).await?;
        Ok(if line.ends_with(b"\n") {
            Line::Command(line)
        } else if line.len() == MAX_LINE_BYTES {
            Line::TooLong
        } else {
            Line::End
        })
    }

    async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let mut reply = BytesMut::with_capacity(4 + data.len());
        put_response(&mut reply, data);
        self.writer.write_all(&reply).await
    }

    async fn exec(&mut self, line: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        match parse_line(line, self.peer.is_some())? {
            LookupRequest::Ping => Ok(self.ping()),
            LookupRequest::Identify => self.identify().await,
            LookupRequest::Register { topic, channel } => {
                self.lookupd.registry.register(&self.peer()?, topic, channel);
                Ok(OK.to_vec())
            }
            LookupRequest::Unregister { topic, channel } => {
                let peer = self.peer()?;
                self.lookupd.registry.unregister(&peer, topic, channel);
                Ok(OK.to_vec())
            }
        }
    }

    /// The identified peer (REGISTER's and UNREGISTER's checks made sure there is one).
    fn peer(&self) -> Result<Arc<Peer>, ProtocolError> {
        self.peer.clone().ok_or_else(|| ProtocolError::invalid("client must IDENTIFY"))
    }

    fn ping(&self) -> Vec<u8> {
        // A PING may come before IDENTIFY; it then only answers.
        if let Some(peer) = &self.peer {
            let since = self.lookupd.registry.touch(peer);
            tracing::info!("CLIENT({}): pinged (last ping {since:?})", self.remote);
        }
        OK.to_vec()
    }

    async fn identify(&mut self) -> Result<Vec<u8>, ProtocolError> {
        let mut size = [0u8; 4];
        if self.reader.read_exact(&mut size).await.is_err() {
            return Err(bad_body("IDENTIFY failed to read body size"));
        }
        let len = identify_body_len(size)?;
        // Grown as the bytes arrive, so a size alone reserves nothing.
        let mut body = Vec::new();
        let limit = u64::try_from(len).unwrap_or(u64::MAX);
        let read = (&mut self.reader).take(limit).read_to_end(&mut body).await;
        if read.is_err() || body.len() != len {
            return Err(bad_body("IDENTIFY failed to read body"));
        }
        let identity = decode_identity(&body)?;
        tracing::info!(
            "CLIENT({}): IDENTIFY Address:{} TCP:{} HTTP:{} Version:{}",
            self.remote,
            identity.broadcast_address,
            identity.tcp_port,
            identity.http_port,
            identity.version
        );
        let registry = &self.lookupd.registry;
        self.peer = Some(registry.identify(self.remote.to_string(), identity));
        // NSQ answers OK when its answer cannot be encoded; ours always can be.
        Ok(serde_json::to_vec(&self.lookupd.info).unwrap_or_else(|_| OK.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    // The wire's sizes are big-endian.
    #![allow(clippy::big_endian_bytes)]
    use super::*;

    fn parse(line: &[u8], identified: bool) -> Result<LookupRequest<'_>, String> {
        parse_line(trim_space(line), identified).map_err(|e| e.to_string())
    }

    #[test]
    fn lines_are_checked_in_nsqs_order() {
        assert_eq!(parse(b"PING\n", false), Ok(LookupRequest::Ping));
        assert_eq!(parse(b" IDENTIFY \r\n", false), Ok(LookupRequest::Identify));
        assert_eq!(parse(b"IDENTIFY", true).unwrap_err(), "E_INVALID cannot IDENTIFY again");
        assert_eq!(parse(b"REGISTER t", false).unwrap_err(), "E_INVALID client must IDENTIFY");
        assert_eq!(
            parse(b"REGISTER", true).unwrap_err(),
            "E_INVALID REGISTER insufficient number of params"
        );
        assert_eq!(
            parse(b"UNREGISTER t b:d", true).unwrap_err(),
            "E_BAD_CHANNEL UNREGISTER channel name 'b:d' is not valid"
        );
        let register = LookupRequest::Register { topic: "t", channel: Some("c") };
        assert_eq!(parse(b"REGISTER t c", true), Ok(register));
        let unregister = LookupRequest::Unregister { topic: "t", channel: None };
        assert_eq!(parse(b"UNREGISTER t", true), Ok(unregister));
        assert_eq!(parse(b"NOPE", true).unwrap_err(), "E_INVALID invalid command NOPE");
    }

    #[test]
    fn identify_bodies_are_bounded_and_need_the_required_fields() {
        assert_eq!(identify_body_len(7i32.to_be_bytes()), Ok(7));
        let negative = identify_body_len((-1i32).to_be_bytes()).unwrap_err();
        assert_eq!(negative.to_string(), "E_BAD_BODY IDENTIFY invalid body size -1");
        let max = i32::try_from(MAX_IDENTIFY_BODY_BYTES + 1).unwrap();
        assert!(identify_body_len(max.to_be_bytes()).is_err());
        let body = br#"{"broadcast_address":"h","tcp_port":4150,"http_port":4151,"version":"1"}"#;
        assert_eq!(decode_identity(body).unwrap().tcp_port, 4150);
        let missing = decode_identity(br#"{"tcp_port":4150}"#).unwrap_err();
        assert_eq!(missing.to_string(), "E_BAD_BODY IDENTIFY missing fields");
        let garbage = decode_identity(b"{").unwrap_err();
        assert_eq!(garbage.to_string(), "E_BAD_BODY IDENTIFY failed to decode JSON body");
    }
}
