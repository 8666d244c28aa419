//! `nsq-bench`: publish to and consume from an nsqd over protocol V2 and report throughput and
//! latency. `nsq-bench writer` and `nsq-bench reader` take the flags of NSQ's bench_writer and
//! bench_reader and print the same lines; `nsq-bench both` runs them at once. See
//! benches/README.md.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use nsq_benches::e2e::{self, PubCommand, ReaderPlan, Stop, WriterPlan};

#[derive(Debug, Parser)]
#[command(name = "nsq-bench", version, about = "End-to-end benchmark of nsqd over protocol V2")]
struct Cli {
    #[command(subcommand)]
    side: Side,
}

#[derive(Debug, Subcommand)]
enum Side {
    /// Publish, like NSQ's bench_writer.
    Writer {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        writer: WriterArgs,
    },
    /// Consume, like NSQ's bench_reader.
    Reader {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        reader: ReaderArgs,
    },
    /// Publish and consume at once; readers subscribe before writers start.
    Both {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        writer: WriterArgs,
        #[command(flatten)]
        reader: ReaderArgs,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// Duration of time to run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    runfor: Duration,
    /// Stop after this many messages (published by the writers, received by the readers)
    /// instead of after --runfor.
    #[arg(long)]
    count: Option<u64>,
    /// <addr>:<port> to connect to nsqd.
    #[arg(long, default_value = "127.0.0.1:4150")]
    nsqd_tcp_address: String,
    /// Topic to publish to and receive messages on; with --topics N, the prefix of N names.
    #[arg(long, default_value = "sub_bench")]
    topic: String,
    /// Number of topics (named <topic>0 … when more than one).
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Size of messages in bytes (at least 8 for latency figures).
    #[arg(long, default_value_t = 200)]
    size: usize,
}

#[derive(Debug, Args)]
struct WriterArgs {
    /// Batch size of messages.
    #[arg(long, default_value_t = 200)]
    batch_size: usize,
    /// Publishing connections (bench_writer opens one per CPU).
    #[arg(long, default_value_t = cpus())]
    publishers: usize,
    /// mpub: one MPUB per batch; pub: the batch as PUB commands written at once.
    #[arg(long, value_enum, default_value = "mpub")]
    command: PubCommand,
    /// Messages per second over all publishers (default: as fast as nsqd answers).
    #[arg(long)]
    rate: Option<u64>,
}

#[derive(Debug, Args)]
struct ReaderArgs {
    /// Channel to receive messages on; with --channels N, the prefix of N names.
    #[arg(long, default_value = "ch")]
    channel: String,
    /// Number of channels per topic (named <channel>0 … when more than one).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Consuming connections, at least one per topic and channel (bench_reader opens one per
    /// CPU).
    #[arg(long, default_value_t = cpus())]
    subscribers: usize,
    /// RDY count to use.
    #[arg(long, default_value_t = 2500)]
    rdy: u64,
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl Common {
    fn addr(&self) -> anyhow::Result<SocketAddr> {
        self.nsqd_tcp_address
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", self.nsqd_tcp_address))?
            .next()
            .with_context(|| format!("{} resolves to no address", self.nsqd_tcp_address))
    }

    fn stop(&self) -> Stop {
        self.count.map_or(Stop::After(self.runfor), Stop::Count)
    }

    fn writer(&self, args: &WriterArgs) -> anyhow::Result<WriterPlan> {
        Ok(WriterPlan {
            addr: self.addr()?,
            topics: e2e::names(&self.topic, self.topics),
            connections: args.publishers,
            size: self.size,
            batch_size: args.batch_size,
            command: args.command,
            rate: args.rate,
            stop: self.stop(),
        })
    }

    fn reader(&self, args: &ReaderArgs, stop: Stop) -> anyhow::Result<ReaderPlan> {
        Ok(ReaderPlan {
            addr: self.addr()?,
            topics: e2e::names(&self.topic, self.topics),
            channels: e2e::names(&args.channel, args.channels),
            connections: args.subscribers,
            rdy: args.rdy,
            stop,
        })
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("nsq-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (common, writer, reader) = match &cli.side {
        Side::Writer { common, writer } => (common, Some(common.writer(writer)?), None),
        Side::Reader { common, reader } => {
            (common, None, Some(common.reader(reader, common.stop())?))
        }
        Side::Both { common, writer, reader } => {
            let writer_plan = common.writer(writer)?;
            // With a count, readers stop once every channel has had every message of its topic.
            let stop = match common.stop() {
                Stop::Count(count) => Stop::Count(count.saturating_mul(reader.channels as u64)),
                after => after,
            };
            (common, Some(writer_plan), Some(common.reader(reader, stop)?))
        }
    };
    if common.size < e2e::stamp::LEN {
        eprintln!(
            "nsq-bench: bodies under {} bytes carry no timestamp: no latency figures",
            e2e::stamp::LEN
        );
    }
    let outcome = e2e::run(writer.as_ref(), reader.as_ref(), common.size)?;
    if let Some(writer) = outcome.writer {
        println!("{}", e2e::log_line("bench_writer", &writer.line()));
    }
    if let Some(reader_side) = outcome.reader {
        println!("{}", e2e::log_line("bench_reader", &reader_side.line()));
        if let Some(plan) = &reader
            && plan.pairs().len() > 1
        {
            let per = reader_side.ops_per_second() / plan.pairs().len() as f64;
            let line = format!(
                "per channel: {per:.3}ops/s over {} topic/channel pairs",
                plan.pairs().len()
            );
            println!("{}", e2e::log_line("bench_reader", &line));
        }
        if let Some(line) = outcome.latency.line() {
            println!("{}", e2e::log_line("bench_reader", &line));
        }
    }
    Ok(())
}
