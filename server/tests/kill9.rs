//! The nsqd binary under kill -9: publishers on `--mem-queue-size=0`, consumers FINing and
//! REQing, the process SIGKILLed and restarted again and again. At the end every acknowledged
//! message has been delivered at least once, none corrupted, none invented. And a clean
//! shutdown (SIGTERM) exits 0 and redelivers nothing that was finished.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use protocol::command::Command as Cmd;
use protocol::frame::{Frame, decode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// A running nsqd binary and its ports.
struct Nsqd {
    child: Child,
    tcp: SocketAddr,
    http: SocketAddr,
}

impl Nsqd {
    fn start(data: &Path, extra: &[&str]) -> Nsqd {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nsqd"))
            .args(["--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0"])
            .arg(format!("--data-path={}", data.display()))
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn nsqd");
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        // Keep draining stderr in the background, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                for (prefix, kind) in [("TCP: listening on ", 0), ("HTTP: listening on ", 1)] {
                    if let Some(at) = line.find(prefix) {
                        let addr: SocketAddr = line[at + prefix.len()..].trim().parse().unwrap();
                        let _ = sender.send((kind, addr));
                    }
                }
            }
        });
        let (mut tcp, mut http) = (None, None);
        while tcp.is_none() || http.is_none() {
            let (kind, addr) = receiver.recv_timeout(Duration::from_secs(30)).expect("nsqd ports");
            if kind == 0 { tcp = Some(addr) } else { http = Some(addr) }
        }
        Nsqd { child, tcp: tcp.unwrap(), http: http.unwrap() }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Nsqd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client connection speaking raw V2.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(protocol::MAGIC_V2).await?;
        Ok(Conn { stream, buf: BytesMut::new() })
    }

    async fn send(&mut self, command: Cmd<'_>) -> std::io::Result<()> {
        self.stream.write_all(&command.to_bytes()).await
    }

    /// The next frame that is not a heartbeat (answered with NOP).
    async fn frame(&mut self) -> std::io::Result<Frame> {
        loop {
            if let Some(frame) = decode_frame(&mut self.buf, 16 << 20).expect("frame") {
                if matches!(&frame, Frame::Response(b) if b == protocol::HEARTBEAT) {
                    self.send(Cmd::Nop).await?;
                    continue;
                }
                return Ok(frame);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// A body that says who sent it and carries its own checksum, so that corruption is seen.
fn make_body(publisher: u32, seq: u32) -> Vec<u8> {
    let text = format!("p{publisher}-{seq:08}-");
    let crc = crc32c::crc32c(text.as_bytes());
    format!("{text}{crc:08x}").into_bytes()
}

fn check_body(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else { return false };
    let Some((head, crc)) = text.rsplit_once('-') else { return false };
    u32::from_str_radix(crc, 16).is_ok_and(|c| c == crc32c::crc32c(format!("{head}-").as_bytes()))
}

#[derive(Default)]
struct Ledger {
    /// Bodies sent (acknowledged or not).
    attempted: HashSet<Vec<u8>>,
    /// Bodies nsqd answered OK to.
    acknowledged: HashSet<Vec<u8>>,
    /// Bodies delivered to a consumer.
    delivered: HashSet<Vec<u8>>,
    corrupted: Vec<Vec<u8>>,
}

/// Publishes until told to stop or the connection dies; each PUB waits for its OK.
async fn publisher(
    addr: SocketAddr,
    id: u32,
    next: Arc<Mutex<u32>>,
    ledger: Arc<watch::Sender<Ledger>>,
) {
    let Ok(mut conn) = Conn::open(addr).await else { return };
    loop {
        let seq = {
            let mut next = next.lock().unwrap();
            *next += 1;
            *next
        };
        let body = make_body(id, seq);
        ledger.send_modify(|l| {
            l.attempted.insert(body.clone());
        });
        // Every fifth publish is an MPUB of two.
        let result = if seq.is_multiple_of(5) {
            let second = make_body(id + 100, seq);
            ledger.send_modify(|l| {
                l.attempted.insert(second.clone());
            });
            let bodies: [&[u8]; 2] = [&body, &second];
            conn.send(Cmd::Mpub { topic: "events", bodies: &bodies })
                .await
                .map(|()| vec![body.clone(), second.clone()])
        } else {
            conn.send(Cmd::Pub { topic: "events", body: &body }).await.map(|()| vec![body.clone()])
        };
        let Ok(sent) = result else { return };
        match conn.frame().await {
            Ok(Frame::Response(ok)) if ok == "OK" => {
                ledger.send_modify(|l| l.acknowledged.extend(sent));
            }
            _ => return,
        }
    }
}

/// Consumes until the connection dies: FINs most messages, REQs some first deliveries.
async fn consumer(addr: SocketAddr, ledger: Arc<watch::Sender<Ledger>>) {
    let Ok(mut conn) = Conn::open(addr).await else { return };
    if conn.send(Cmd::Sub { topic: "events", channel: "archive" }).await.is_err() {
        return;
    }
    if !matches!(conn.frame().await, Ok(Frame::Response(_)))
        || conn.send(Cmd::Rdy(25)).await.is_err()
    {
        return;
    }
    let mut count = 0u64;
    while let Ok(frame) = conn.frame().await {
        let Frame::Message(message) = frame else { continue };
        count += 1;
        let body = message.body.to_vec();
        ledger.send_modify(|l| {
            if !check_body(&body) {
                l.corrupted.push(body.clone());
            }
            l.delivered.insert(body);
        });
        let command = if message.attempts == 1 && count.is_multiple_of(7) {
            Cmd::Req { id: &message.id, timeout_ms: 0 }
        } else {
            Cmd::Fin(&message.id)
        };
        if conn.send(command).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_repeated_kill_9() {
    // Goal: DESIGN.md §3.4 items 2 and 4 for the whole binary. Method: 12 cycles of start,
    // publish and consume for a while, SIGKILL; then a last start that drains the channel;
    // compare what was acknowledged, sent and delivered.
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(watch::Sender::new(Ledger::default()));
    let mut progress = ledger.subscribe();
    let next = Arc::new(Mutex::new(0u32));
    let cycles = 12;
    for cycle in 0..cycles {
        let nsqd = Nsqd::start(dir.path(), &["--mem-queue-size=0"]);
        let mut tasks = tokio::task::JoinSet::new();
        for id in 0..2 {
            tasks.spawn(publisher(nsqd.tcp, id, Arc::clone(&next), Arc::clone(&ledger)));
        }
        for _ in 0..2 {
            tasks.spawn(consumer(nsqd.tcp, Arc::clone(&ledger)));
        }
        // Let work happen: until some new messages were acknowledged in this cycle.
        let target = ledger.borrow().acknowledged.len() + 200 + cycle * 37;
        let reached = progress.wait_for(|l| l.acknowledged.len() >= target);
        tokio::time::timeout(Duration::from_secs(30), reached)
            .await
            .unwrap_or_else(|_| panic!("no progress in cycle {cycle}"))
            .unwrap();
        nsqd.kill9();
        while tasks.join_next().await.is_some() {}
    }

    // Drain: every acknowledged message must come (again) to the channel.
    let nsqd = Nsqd::start(dir.path(), &["--mem-queue-size=0"]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..2 {
        tasks.spawn(consumer(nsqd.tcp, Arc::clone(&ledger)));
    }
    let drained = progress.wait_for(|l| l.acknowledged.is_subset(&l.delivered));
    if tokio::time::timeout(Duration::from_secs(60), drained).await.is_err() {
        let l = ledger.borrow();
        let missing = l.acknowledged.difference(&l.delivered).count();
        panic!("{missing} acknowledged messages never delivered");
    }
    let status = nsqd.terminate();
    assert!(status.success(), "clean shutdown exits 0: {status:?}");
    while tasks.join_next().await.is_some() {}

    let ledger = ledger.borrow();
    assert!(ledger.corrupted.is_empty(), "corrupted bodies: {:?}", &ledger.corrupted[..1]);
    let invented: Vec<_> = ledger.delivered.difference(&ledger.attempted).collect();
    assert!(invented.is_empty(), "delivered but never sent: {:?}", &invented[..1]);
    assert!(ledger.acknowledged.len() >= 200 * cycles);
    eprintln!(
        "{cycles} kill -9 cycles: {} acknowledged, {} sent, {} delivered",
        ledger.acknowledged.len(),
        ledger.attempted.len(),
        ledger.delivered.len()
    );
}

/// Reads `/stats?format=json` of a running nsqd.
async fn stats(http: SocketAddr) -> serde_json::Value {
    let mut stream = TcpStream::connect(http).await.unwrap();
    let request =
        format!("GET /stats?format=json HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let start = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    serde_json::from_slice(&raw[start..]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_redelivers_nothing_finished() {
    // Goal: SIGTERM stops nsqd cleanly (exit 0) with every FIN checkpointed, while what was
    // in flight comes back. Method: publish 10, finish 6 and hold 1 in flight, SIGTERM,
    // restart, and read the channel's depth and the redelivered message.
    let dir = tempfile::tempdir().unwrap();
    let nsqd = Nsqd::start(dir.path(), &[]);
    let mut producer = Conn::open(nsqd.tcp).await.unwrap();
    for seq in 0..10 {
        producer.send(Cmd::Pub { topic: "jobs", body: &make_body(0, seq) }).await.unwrap();
        assert!(matches!(producer.frame().await.unwrap(), Frame::Response(ok) if ok == "OK"));
    }
    let mut consumer = Conn::open(nsqd.tcp).await.unwrap();
    consumer.send(Cmd::Sub { topic: "jobs", channel: "work" }).await.unwrap();
    consumer.frame().await.unwrap();
    consumer.send(Cmd::Rdy(1)).await.unwrap();
    let mut held = None;
    for i in 0..7 {
        let Frame::Message(message) = consumer.frame().await.unwrap() else { panic!() };
        if i < 6 {
            consumer.send(Cmd::Fin(&message.id)).await.unwrap();
        } else {
            held = Some(message);
        }
    }
    // Commands run in order: once a later PUB is answered, the FINs were handled.
    consumer.send(Cmd::Pub { topic: "marker", body: b"." }).await.unwrap();
    assert!(matches!(consumer.frame().await.unwrap(), Frame::Response(ok) if ok == "OK"));
    assert_eq!(stats(nsqd.http).await["topics"][0]["channels"][0]["depth"], 3);
    let status = nsqd.terminate();
    assert!(status.success(), "{status:?}");

    let nsqd = Nsqd::start(dir.path(), &[]);
    let channel = &stats(nsqd.http).await["topics"][0]["channels"][0];
    assert_eq!(channel["depth"], 4, "3 never sent and the 1 in flight");
    let mut consumer = Conn::open(nsqd.tcp).await.unwrap();
    consumer.send(Cmd::Sub { topic: "jobs", channel: "work" }).await.unwrap();
    consumer.frame().await.unwrap();
    consumer.send(Cmd::Rdy(1)).await.unwrap();
    let Frame::Message(first) = consumer.frame().await.unwrap() else { panic!() };
    let held = held.unwrap();
    assert_eq!((first.id, &first.body), (held.id, &held.body), "the held message first");
    assert_eq!(first.attempts, 2);
    assert!(nsqd.terminate().success());
}
