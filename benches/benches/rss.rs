//! nsqd's resident memory with a 1 GiB backlog on disk and 100 idle connections.
//!
//! Runs the release `nsqd` binary (build it first; `NSQD_BIN` overrides the path), fills a
//! topic with 1 GiB of 4 KiB messages over TCP (MPUB), restarts nsqd so the backlog is only on
//! disk, opens 100 connections that subscribe with RDY 0 and stay idle, and reads the process's
//! `VmRSS` and `VmHWM` from `/proc`.
//!
//! ```sh
//! cargo build --release --bin nsqd && cargo bench -p nsq-benches --bench rss
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use bytes::BytesMut;
use protocol::command::Command as Cmd;
use protocol::frame::{Frame, decode_frame};

const BACKLOG_BYTES: u64 = 1 << 30;
const MESSAGE_BYTES: usize = 4096;
const BATCH: usize = 1000;
const IDLE_CONNECTIONS: usize = 100;
const TARGET_RSS_MIB: f64 = 50.0;

fn nsqd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NSQD_BIN") {
        return path.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/nsqd")
}

struct Nsqd {
    child: Child,
    tcp: SocketAddr,
}

impl Nsqd {
    fn start(data: &Path) -> Nsqd {
        let binary = nsqd_binary();
        assert!(binary.exists(), "{} missing: cargo build --release --bin nsqd", binary.display());
        let mut child = Command::new(binary)
            .args(["--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0"])
            .arg(format!("--data-path={}", data.display()))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsqd");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let tcp = loop {
            let line = lines.next().expect("nsqd exited").unwrap();
            if let Some((_, addr)) = line.split_once("TCP: listening on ") {
                break addr.trim().parse().unwrap();
            }
        };
        // Keep draining stderr, so that nsqd never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Nsqd { child, tcp }
    }

    /// (VmRSS, VmHWM) in MiB.
    fn memory_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            let kib: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            kib / 1024.0
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn stop(mut self) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(protocol::MAGIC_V2).unwrap();
    stream
}

fn expect_ok(stream: &mut TcpStream, buf: &mut BytesMut) {
    loop {
        if let Some(frame) = decode_frame(buf, 1 << 20).unwrap() {
            match frame {
                Frame::Response(body) if body == "OK" => return,
                Frame::Response(_) => continue,
                other => panic!("{other:?}"),
            }
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir =
        tempfile::tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")).unwrap();
    let nsqd = Nsqd::start(dir.path());
    let started = Instant::now();
    let mut producer = connect(nsqd.tcp);
    let mut buf = BytesMut::new();
    let message = vec![b'x'; MESSAGE_BYTES];
    let bodies: Vec<&[u8]> = (0..BATCH).map(|_| message.as_slice()).collect();
    let batches = BACKLOG_BYTES / (MESSAGE_BYTES * BATCH) as u64 + 1;
    for _ in 0..batches {
        producer.write_all(&Cmd::Mpub { topic: "backlog", bodies: &bodies }.to_bytes()).unwrap();
        expect_ok(&mut producer, &mut buf);
    }
    let published = batches * BATCH as u64;
    let (rss, hwm) = nsqd.memory_mib();
    println!(
        "published {published} x {MESSAGE_BYTES} B ({:.2} GiB) in {:.1?}: RSS {rss:.1} MiB, peak {hwm:.1} MiB",
        (published * MESSAGE_BYTES as u64) as f64 / f64::from(1 << 30),
        started.elapsed()
    );
    drop(producer);
    nsqd.stop();

    let nsqd = Nsqd::start(dir.path());
    let (rss, hwm) = nsqd.memory_mib();
    println!("restarted on the backlog: RSS {rss:.1} MiB, peak {hwm:.1} MiB");
    let mut idle = Vec::new();
    for i in 0..IDLE_CONNECTIONS {
        let mut stream = connect(nsqd.tcp);
        let channel = format!("idle{}", i % 10);
        stream.write_all(&Cmd::Sub { topic: "backlog", channel: &channel }.to_bytes()).unwrap();
        let mut buf = BytesMut::new();
        expect_ok(&mut stream, &mut buf);
        stream.write_all(&Cmd::Rdy(0).to_bytes()).unwrap();
        idle.push(stream);
    }
    // The last connection's RDY is handled before this answer comes.
    let mut last = connect(nsqd.tcp);
    last.write_all(&Cmd::Nop.to_bytes()).unwrap();
    last.write_all(&Cmd::Pub { topic: "other", body: b"." }.to_bytes()).unwrap();
    expect_ok(&mut last, &mut BytesMut::new());
    let (rss, hwm) = nsqd.memory_mib();
    let verdict = if rss < TARGET_RSS_MIB { "under" } else { "OVER" };
    println!(
        "{IDLE_CONNECTIONS} idle connections on 10 channels: RSS {rss:.1} MiB, peak {hwm:.1} MiB \
         ({verdict} the {TARGET_RSS_MIB} MiB target)"
    );
    drop(idle);
    nsqd.stop();
}
