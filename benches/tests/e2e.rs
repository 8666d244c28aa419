//! The end-to-end benchmark against a real nsqd (in this process, on loopback, over a data
//! directory on disk): every message published is counted once per channel, and every delivery
//! carries a latency sample.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

use std::sync::Arc;

use engine::Engine;
use nsq_benches::e2e::{self, PubCommand, ReaderPlan, Stop, WriterPlan};
use server::logging::{LogControl, LogLevel};
use server::{Nsqd, Options, RunningNsqd};

struct Server {
    runtime: tokio::runtime::Runtime,
    running: Option<RunningNsqd>,
    _data: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let data = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let options = Options::parse_args([
            "nsqd".to_owned(),
            "--tcp-address=127.0.0.1:0".to_owned(),
            "--http-address=127.0.0.1:0".to_owned(),
            "--mem-queue-size=0".to_owned(),
            format!("--data-path={}", data.path().display()),
        ])
        .unwrap();
        let (engine, _) = Engine::open(data.path(), options.engine_config()).unwrap();
        let engine = Arc::new(engine);
        let running = runtime.block_on(async {
            engine.start_background().unwrap();
            Nsqd::start(options, engine, LogControl::fixed(LogLevel::Warn)).await.unwrap()
        });
        Server { runtime, running: Some(running), _data: data }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().unwrap().tcp_addr()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.shutdown()).unwrap();
        }
    }
}

fn writer(addr: std::net::SocketAddr, command: PubCommand, count: u64) -> WriterPlan {
    WriterPlan {
        addr,
        topics: e2e::names("bench", 1),
        connections: 2,
        size: 64,
        batch_size: 50,
        command,
        rate: None,
        stop: Stop::Count(count),
    }
}

#[test]
fn mpub_fan_out_reaches_every_channel_once_and_is_timed() {
    let server = Server::start();
    let reader = ReaderPlan {
        addr: server.addr(),
        topics: e2e::names("bench", 1),
        channels: e2e::names("ch", 3),
        connections: 2,
        rdy: 100,
        stop: Stop::Count(3 * 10_007),
    };
    assert_eq!(reader.connection_count(), 3);
    let outcome =
        e2e::run(Some(&writer(server.addr(), PubCommand::Mpub, 10_007)), Some(&reader), 64)
            .unwrap();
    assert_eq!(outcome.writer.unwrap().messages, 10_007);
    // Nothing times out or is requeued in this short run, so each channel sees each message once.
    assert_eq!(outcome.reader.unwrap().messages, 3 * 10_007);
    assert_eq!(outcome.latency.samples(), 3 * 10_007);
    assert!(outcome.latency.at(0.5).unwrap() < std::time::Duration::from_secs(60));
}

#[test]
fn pipelined_pubs_are_each_acknowledged_and_then_drained() {
    let server = Server::start();
    let published =
        e2e::run(Some(&writer(server.addr(), PubCommand::Pub, 1_001)), None, 64).unwrap();
    assert_eq!(published.writer.unwrap().messages, 1_001);
    assert!(published.reader.is_none());
    let reader = ReaderPlan {
        addr: server.addr(),
        topics: e2e::names("bench", 1),
        channels: e2e::names("ch", 1),
        connections: 2,
        rdy: 7,
        stop: Stop::Count(1_001),
    };
    // The channel is made by the first SUB, after publishing: NSQ hands a topic's backlog to its
    // first channel.
    let drained = e2e::run(None, Some(&reader), 64).unwrap();
    assert_eq!(drained.reader.unwrap().messages, 1_001);
    assert!(drained.writer.is_none());
}

#[test]
fn an_error_from_nsqd_fails_the_run_with_its_text() {
    let server = Server::start();
    let mut plan = writer(server.addr(), PubCommand::Mpub, 10);
    plan.topics = vec!["bad!topic".into()];
    let error = e2e::run(Some(&plan), None, 64).unwrap_err();
    assert!(format!("{error:#}").contains("E_BAD_TOPIC"), "{error:#}");
}
