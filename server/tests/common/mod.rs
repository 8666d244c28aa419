//! Test scaffolding: an nsqd served in-process on loopback ports, over an engine on simulated
//! storage with a clock the test moves, and raw-bytes clients for its TCP and HTTP sides.
#![allow(dead_code, unreachable_pub)]

pub mod lookupd;
pub mod pki;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use protocol::command::Command;
use protocol::compression::{Compression, Compressor, Decompressor};
use protocol::frame::{Frame, Message, decode_frame};
use server::logging::{LogControl, LogLevel};
use server::{Nsqd, Options, RunningNsqd};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// An nsqd on `127.0.0.1:0`, with the memory queue off unless the test says otherwise.
pub struct TestServer {
    running: Option<RunningNsqd>,
    pub engine: Arc<Engine>,
    pub clock: Arc<ManualClock>,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    /// With TLS configured.
    pub https: Option<SocketAddr>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts with extra nsqd flags, in NSQ's syntax.
    pub async fn start_with(flags: &[&str]) -> Self {
        Self::try_start_with(flags).await.expect("start")
    }

    /// Starts a server, or says why it would not start (bad flags, TLS files, ports).
    pub async fn try_start_with(flags: &[&str]) -> anyhow::Result<Self> {
        let mut args = vec!["nsqd", "--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0"];
        args.push("--mem-queue-size=0");
        args.extend_from_slice(flags);
        let options = Options::parse_args(args)?;
        let clock = Arc::new(ManualClock::default());
        let config = EngineConfig { ..options.engine_config() };
        let (engine, _) = Engine::open_with(
            "/data",
            config,
            Arc::new(engine::storage::SimStorage::new()),
            engine::meta::MetaStore::in_memory(Arc::new(engine::meta::MemoryMeta::new())),
            clock.clone(),
        )?;
        let engine = Arc::new(engine);
        let running =
            Nsqd::start(options, Arc::clone(&engine), LogControl::fixed(LogLevel::Info)).await?;
        let tcp = running.tcp_addr();
        let http = running.http_addr().expect("http");
        let https = running.https_addr();
        Ok(Self { running: Some(running), engine, clock, tcp, http, https })
    }

    pub fn nsqd(&self) -> &Arc<Nsqd> {
        self.running.as_ref().expect("running").nsqd()
    }

    /// Moves the engine's clock and fires the timeouts and deferred deliveries now due.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.engine.fire_timers();
    }

    /// A connection that has sent the protocol magic.
    pub async fn connect(&self) -> Client {
        let mut client = self.connect_raw().await;
        client.send(protocol::MAGIC_V2).await;
        client
    }

    /// A connection that has sent nothing yet.
    pub async fn connect_raw(&self) -> Client {
        let stream = TcpStream::connect(self.tcp).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            local_addr: stream.local_addr().expect("local address"),
            stream: Box::new(stream),
            buf: BytesMut::new(),
            raw: BytesMut::new(),
            compressor: None,
            decompressor: None,
        }
    }

    /// A subscribed consumer with `rdy`, heartbeats at their default.
    pub async fn consumer(&self, topic: &str, channel: &str, rdy: u64) -> Client {
        let mut client = self.connect().await;
        client.command(Command::Sub { topic, channel }).await;
        client.expect_ok().await;
        client.command(Command::Rdy(rdy)).await;
        client
    }

    pub async fn publish(&self, topic: &str, body: &[u8]) {
        let mut client = self.connect().await;
        client.command(Command::Pub { topic, body }).await;
        client.expect_ok().await;
    }

    pub async fn http(&self, method: &str, target: &str, body: &[u8]) -> HttpReply {
        http_request(self.http, method, target, &[], body).await
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("shutdown");
        }
    }
}

/// A raw V2 connection.
/// A connection's byte stream: TCP, or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A V2 client that speaks raw frames, with TLS and compression when it upgrades.
pub struct Client {
    stream: Box<dyn Stream>,
    pub local_addr: SocketAddr,
    /// Received bytes, decompressed, not yet decoded into frames.
    buf: BytesMut,
    /// Received bytes not yet decompressed.
    raw: BytesMut,
    compressor: Option<Compressor>,
    decompressor: Option<Decompressor>,
}

impl Client {
    pub async fn send(&mut self, bytes: &[u8]) {
        let bytes = match &mut self.compressor {
            Some(compressor) => compressor.compress(bytes).expect("compress"),
            None => bytes,
        };
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends bytes as they are, even on a compressed connection.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn shutdown_write(&mut self) {
        self.stream.shutdown().await.expect("shutdown");
    }

    /// Runs the client side of a TLS handshake (after an IDENTIFY answered `tls_v1`).
    pub async fn start_tls(&mut self, connector: &TlsConnector) -> std::io::Result<()> {
        assert!(self.buf.is_empty() && self.raw.is_empty(), "bytes before the handshake");
        let plain = std::mem::replace(
            &mut self.stream,
            Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink())),
        );
        let tls = connector.connect(pki::server_name(), plain).await?;
        self.stream = Box::new(tls);
        Ok(())
    }

    /// Compresses what is sent and decompresses what arrives from now on; bytes already
    /// received past the last frame are compressed ones.
    pub fn start_compression(&mut self, compression: Compression) {
        self.compressor = Some(Compressor::new(compression));
        self.decompressor = Some(Decompressor::new(compression));
        self.raw = self.buf.split();
        self.inflate();
    }

    /// IDENTIFY with feature negotiation, then the upgrades the answer names, each checked
    /// for its `OK`. Returns the answer.
    pub async fn negotiate(
        &mut self,
        json: &str,
        connector: Option<&TlsConnector>,
    ) -> serde_json::Value {
        let answer = self.identify(json).await;
        let answer: serde_json::Value = serde_json::from_slice(&answer).expect("IDENTIFY JSON");
        if answer["tls_v1"] == true {
            self.start_tls(connector.expect("a TLS connector")).await.expect("TLS handshake");
            self.expect_ok().await;
        }
        if answer["snappy"] == true {
            self.start_compression(Compression::Snappy);
            self.expect_ok().await;
        }
        if answer["deflate"] == true {
            let level = answer["deflate_level"].as_u64().expect("level");
            self.start_compression(Compression::Deflate { level: level as u32 });
            self.expect_ok().await;
        }
        answer
    }

    /// Reads more bytes into `buf`; false at the end of the stream or on an error.
    async fn receive(&mut self) -> bool {
        if self.decompressor.is_none() {
            return matches!(self.stream.read_buf(&mut self.buf).await, Ok(n) if n > 0);
        }
        if !matches!(self.stream.read_buf(&mut self.raw).await, Ok(n) if n > 0) {
            return false;
        }
        self.inflate();
        true
    }

    /// Decompresses what `raw` holds into `buf`.
    fn inflate(&mut self) {
        let Some(decompressor) = &mut self.decompressor else { return };
        let mut out = vec![0u8; 64 * 1024];
        loop {
            let (used, produced) = decompressor.decompress(&self.raw, &mut out).expect("inflate");
            let _ = self.raw.split_to(used);
            self.buf.extend_from_slice(&out[..produced]);
            if used == 0 && produced == 0 {
                return;
            }
        }
    }

    pub async fn command(&mut self, command: Command<'_>) {
        self.send(&command.to_bytes()).await;
    }

    /// The next frame, or `None` if the server closed the connection.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = decode_frame(&mut self.buf, 64 << 20).expect("frame") {
                return Some(frame);
            }
            if !self.receive().await {
                assert!(self.buf.is_empty(), "closed inside a frame: {:?}", self.buf);
                return None;
            }
        }
    }

    /// The next frame that is not a heartbeat.
    pub async fn frame(&mut self) -> Frame {
        loop {
            match self.next_frame().await.expect("connection closed") {
                Frame::Response(body) if body == protocol::HEARTBEAT => continue,
                frame => return frame,
            }
        }
    }

    pub async fn response(&mut self) -> Bytes {
        match self.frame().await {
            Frame::Response(body) => body,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    pub async fn expect_ok(&mut self) {
        assert_eq!(self.response().await, "OK");
    }

    pub async fn message(&mut self) -> Message {
        match self.frame().await {
            Frame::Message(message) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Expects an error frame with exactly `text`.
    pub async fn expect_error(&mut self, text: &str) {
        match self.frame().await {
            Frame::Error(body) => assert_eq!(String::from_utf8_lossy(&body), text),
            other => panic!("expected error {text:?}, got {other:?}"),
        }
    }

    /// Expects the server to close the connection, skipping heartbeats.
    pub async fn expect_closed(&mut self) {
        while let Some(frame) = self.next_frame().await {
            match frame {
                Frame::Response(body) if body == protocol::HEARTBEAT => {}
                other => panic!("expected the connection to close, got {other:?}"),
            }
        }
    }

    /// A fatal error: its frame, then the close.
    pub async fn expect_fatal(&mut self, text: &str) {
        self.expect_error(text).await;
        self.expect_closed().await;
    }

    /// IDENTIFY with a JSON body; returns the response frame's body.
    pub async fn identify(&mut self, json: &str) -> Bytes {
        self.command(Command::Identify(json.as_bytes())).await;
        self.response().await
    }

    /// Proves the connection is open and every earlier command was handled: NOP has no reply,
    /// so publish to a scratch topic and wait for its OK.
    pub async fn sync(&mut self) {
        self.command(Command::Pub { topic: "sync", body: b"." }).await;
        self.expect_ok().await;
    }
}

#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
}

/// The `X-NSQ-Content-Type` of every reply in NSQ's V1 envelope (nsqd's and nsqlookupd's).
pub const NSQ_CONTENT_TYPE: &str = "nsq; version=1.0";
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// A V1 error reply: the status, `{"message":"<TEXT>"}` exactly, as JSON, with the V1 header.
#[track_caller]
pub fn assert_error(reply: &HttpReply, status: u16, message: &str) {
    let expected = format!(r#"{{"message":"{message}"}}"#);
    assert_eq!((reply.status, reply.text()), (status, expected), "{reply:?}");
    assert_eq!(reply.header("X-NSQ-Content-Type"), Some(NSQ_CONTENT_TYPE), "{reply:?}");
    assert_eq!(reply.header("Content-Type"), Some(JSON_CONTENT_TYPE), "{reply:?}");
}

/// A V1 success with a raw body (`OK`), or an empty one without a content type (the topic and
/// channel actions).
#[track_caller]
pub fn assert_ok(reply: &HttpReply, body: &str) {
    assert_eq!((reply.status, reply.text().as_str()), (200, body), "{reply:?}");
    assert_eq!(reply.header("X-NSQ-Content-Type"), Some(NSQ_CONTENT_TYPE), "{reply:?}");
    if body.is_empty() {
        assert_eq!(reply.header("Content-Type"), None, "{reply:?}");
    }
}

/// A V1 success with a JSON body; returns the document.
#[track_caller]
pub fn ok_json(reply: &HttpReply) -> serde_json::Value {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("X-NSQ-Content-Type"), Some(NSQ_CONTENT_TYPE), "{reply:?}");
    assert_eq!(reply.header("Content-Type"), Some(JSON_CONTENT_TYPE), "{reply:?}");
    reply.json()
}

/// One HTTP/1.1 request on its own connection, read to the close.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    http_exchange(Box::new(stream), addr, method, target, headers, body).await
}

/// An HTTPS request, or the handshake's error.
pub async fn https_request(
    addr: SocketAddr,
    connector: &TlsConnector,
    method: &str,
    target: &str,
) -> std::io::Result<HttpReply> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = connector.connect(pki::server_name(), tcp).await?;
    Ok(http_exchange(Box::new(tls), addr, method, target, &[], b"").await)
}

async fn http_exchange(
    mut stream: Box<dyn Stream>,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    // A body framed by the test (its own Content-Length, or chunked) gets no length added.
    let framed = headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    });
    if !framed {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    // The server may answer (413) before reading the whole body and close.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line.split(' ').nth(1).expect("status").parse().expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[head_end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpReply { status, headers, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").expect("chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).expect("hex"), 16)
            .expect("chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}
