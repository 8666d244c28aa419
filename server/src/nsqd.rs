//! The daemon: the engine, the options, the connected clients, and the listeners serving them.
//!
//! [`Nsqd::start`] binds the TCP, HTTP and (with TLS) HTTPS listeners (port 0 picks a free port; the real one is
//! logged and returned) and serves until [`RunningNsqd::shutdown`], which follows nsqd's order:
//! stop accepting, close every client connection (their in-flight messages go back to their
//! channels), stop HTTP, then close the engine, which writes what is queued and checkpoints.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::ops::Range;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::{Engine, EngineError, Topic};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use anyhow::Context as _;

use crate::auth::AuthServers;
use crate::clients::Clients;
use crate::daemon::{self, Signals};
use crate::logging::LogControl;
use crate::lookup::Lookup;
use crate::options::{Options, TlsRequired};
use crate::serving::{SHUTDOWN_GRACE, bind, drain};

/// The nsqd program, given its command line (program name first): options, logging, the engine
/// on the data directory, the listeners, and a clean shutdown on SIGINT or SIGTERM (stop
/// accepting, close connections, write what is queued, checkpoint, exit 0). The `nsqd` binary is
/// this function; test harnesses that must kill a real nsqd process run it as their child.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let parsed = Options::parse_args(args);
    daemon::main("nsqd", parsed, |options| &options.daemon, run)
}

async fn run(options: Options, log: LogControl, signals: Signals) -> anyhow::Result<()> {
    let data_path = options.data_path.clone();
    let config = options.engine_config();
    let prepared = Nsqd::prepare(options)?;
    let (engine, report) = tokio::task::spawn_blocking({
        let data_path = data_path.clone();
        move || Engine::open(&data_path, config)
    })
    .await?
    .with_context(|| format!("failed to open data directory {}", data_path.display()))?;
    for (topic, recovery) in &report.topics {
        tracing::info!(topic = %topic, "recovered: {recovery:?}");
    }
    engine.start_background().context("starting the engine")?;
    let engine = Arc::new(engine);
    let running = prepared.start(engine, log).await?;
    signals.wait().await;
    running.shutdown().await
}

/// What every connection and request handler shares.
#[derive(Debug)]
pub struct Nsqd {
    pub(crate) engine: Arc<Engine>,
    pub(crate) options: Options,
    pub(crate) clients: Clients,
    /// Unix seconds.
    pub(crate) start_time: i64,
    pub(crate) hostname: String,
    pub(crate) broadcast_address: String,
    /// The ports registered with lookupd (`--broadcast-*-port`, or the real ones).
    pub(crate) broadcast_tcp_port: u16,
    pub(crate) broadcast_http_port: u16,
    /// The ports listened on (`/info` shows these).
    pub(crate) tcp_port: u16,
    pub(crate) http_port: u16,
    /// 0 without an HTTPS listener.
    pub(crate) https_port: u16,
    /// The TLS configuration, when `--tls-cert` and `--tls-key` are given.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// `--tls-required`, raised by a client auth policy.
    pub(crate) tls_required: TlsRequired,
    /// The auth servers, when `--auth-http-address` is given.
    pub(crate) auth: Option<AuthServers>,
    /// The nsqlookupd peers.
    pub(crate) lookup: Lookup,
    /// `--node-id`, or a hash of the host name as nsqd does (shown by `/config/id`; message
    /// IDs here are log offsets and do not need it).
    pub(crate) node_id: i64,
    pub(crate) log: LogControl,
    /// Publishes writing on their own worker thread now (see [`Nsqd::publish`]).
    inline_publishes: std::sync::atomic::AtomicUsize,
}

impl Nsqd {
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The topic `name`, created if needed (creation touches the disk: off the async workers).
    pub(crate) async fn topic(&self, name: &str) -> Result<Arc<Topic>, EngineError> {
        if let Some(topic) = self.engine.get_topic(name) {
            return Ok(topic);
        }
        let engine = Arc::clone(&self.engine);
        let name = name.to_owned();
        blocking(move || engine.topic(&name)).await
    }

    /// Publishes the messages at `ranges` of `body` (one buffer for a PUB or a whole MPUB).
    /// With `--mem-queue-size=0` the publish waits for its write, so it runs off the async
    /// workers; otherwise it only queues the records.
    pub(crate) async fn publish(
        &self,
        topic: Arc<Topic>,
        body: Vec<u8>,
        ranges: Vec<Range<usize>>,
        defer: Duration,
    ) -> Result<(), EngineError> {
        if ranges.is_empty() {
            return Ok(());
        }
        let publish = move || {
            let messages: Vec<&[u8]> = ranges.iter().map(|r| &body[r.clone()]).collect();
            topic.publish(&messages, defer).map(|_| ())
        };
        if self.options.mem_queue_size != 0 {
            return publish();
        }
        // One publish at a time writes on its own worker thread: alone, its write is short and
        // a hand-over to a blocking thread and back would be most of its cost. Concurrent ones
        // go to the blocking threads, where they wait for each other's rounds of the log
        // without taking worker threads (`block_in_place` moves the worker's other tasks to a
        // new thread each time, which costs more than it saves once publishes overlap).
        let inline = &self.inline_publishes;
        if inline.fetch_add(1, std::sync::atomic::Ordering::AcqRel) == 0 {
            let outcome = blocking_here(publish).await;
            inline.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            outcome
        } else {
            inline.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            blocking(publish).await
        }
    }

    /// Builds what the options ask for before anything is opened or bound: the TLS
    /// configuration (reading its certificate files) and the HTTP client for auth servers
    /// and lookupds. A bad certificate stops nsqd here, before it opens its data directory.
    pub fn prepare(options: Options) -> anyhow::Result<Prepared> {
        let tls = crate::tls::server_config(&options)?;
        let http = crate::tls::http_client(&options)?;
        Ok(Prepared { options, tls, http })
    }

    /// [`Nsqd::prepare`], then [`Prepared::start`].
    pub async fn start(
        options: Options,
        engine: Arc<Engine>,
        log: LogControl,
    ) -> anyhow::Result<RunningNsqd> {
        Self::prepare(options)?.start(engine, log).await
    }
}

/// nsqd's options with what was built from them, ready to serve.
#[derive(Debug)]
pub struct Prepared {
    options: Options,
    tls: Option<Arc<rustls::ServerConfig>>,
    http: reqwest::Client,
}

impl Prepared {
    /// Binds the listeners and starts serving. The engine's background work (timers, queued
    /// writes, checkpoints) is the caller's to start: the binary starts it, tests drive it.
    pub async fn start(self, engine: Arc<Engine>, log: LogControl) -> anyhow::Result<RunningNsqd> {
        let Prepared { options, tls, http } = self;
        let tls_required = options.effective_tls_required();
        let auth = AuthServers::new(&options, &http);
        let shutdown = CancellationToken::new();
        let connections = CancellationToken::new();
        let lookup = Lookup::new(http, shutdown.clone());
        let tcp = bind(&options.tcp_address).await?;
        let tcp_addr = tcp.local_addr()?;
        let http = if options.http_address.is_empty() {
            None
        } else {
            Some(bind(&options.http_address).await?)
        };
        let http_addr = http.as_ref().map(TcpListener::local_addr).transpose()?;
        let https = match &tls {
            Some(_) if !options.https_address.is_empty() => {
                Some(bind(&options.https_address).await?)
            }
            _ => None,
        };
        let https_addr = https.as_ref().map(TcpListener::local_addr).transpose()?;
        let hostname = crate::daemon::hostname();
        let broadcast_address =
            options.broadcast_address.clone().unwrap_or_else(|| hostname.clone());
        let tcp_port = tcp_addr.port();
        let http_port = http_addr.map_or(0, |addr| addr.port());
        let broadcast_tcp_port =
            if options.broadcast_tcp_port != 0 { options.broadcast_tcp_port } else { tcp_port };
        let broadcast_http_port =
            if options.broadcast_http_port != 0 { options.broadcast_http_port } else { http_port };
        let start_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let node_id = options
            .node_id
            .unwrap_or_else(|| i64::from(crc32c::crc32c(hostname.as_bytes()) % 1024));
        let nsqd = Arc::new(Nsqd {
            engine,
            options,
            clients: Clients::default(),
            start_time,
            hostname,
            broadcast_address,
            broadcast_tcp_port,
            broadcast_http_port,
            tcp_port,
            http_port,
            https_port: https_addr.map_or(0, |addr| addr.port()),
            tls,
            tls_required,
            auth,
            lookup,
            node_id,
            log,
            inline_publishes: std::sync::atomic::AtomicUsize::new(0),
        });
        let observer = Arc::downgrade(&nsqd);
        nsqd.engine.observe(Arc::new(move |change: &engine::changes::Change| {
            if let Some(nsqd) = observer.upgrade() {
                nsqd.lookup.changed(&nsqd, change);
            }
        }));
        nsqd.lookup.set_addresses(&nsqd, &nsqd.options.lookupd_tcp_addresses);

        let mut tasks = JoinSet::new();
        tracing::info!("TCP: listening on {tcp_addr}");
        tasks.spawn(crate::tcp::accept_loop(
            Arc::clone(&nsqd),
            tcp,
            shutdown.clone(),
            connections.clone(),
        ));
        if let (Some(listener), Some(addr)) = (http, http_addr) {
            tracing::info!("HTTP: listening on {addr}");
            tasks.spawn(crate::http::serve(Arc::clone(&nsqd), listener, shutdown.clone()));
        }
        if let (Some(listener), Some(addr), Some(config)) = (https, https_addr, &nsqd.tls) {
            tracing::info!("HTTPS: listening on {addr}");
            let listener =
                crate::tls::HttpsListener::new(listener, Arc::clone(config), shutdown.clone())?;
            tasks.spawn(crate::http::serve_https(Arc::clone(&nsqd), listener, shutdown.clone()));
        }
        Ok(RunningNsqd { nsqd, tcp_addr, http_addr, https_addr, shutdown, connections, tasks })
    }
}

/// A serving nsqd.
#[derive(Debug)]
pub struct RunningNsqd {
    nsqd: Arc<Nsqd>,
    tcp_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    connections: CancellationToken,
    tasks: JoinSet<()>,
}

impl RunningNsqd {
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The HTTPS listener's address, when TLS is configured.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    pub fn nsqd(&self) -> &Arc<Nsqd> {
        &self.nsqd
    }

    /// Stops accepting, closes every connection, stops HTTP, and closes the engine.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.connections.cancel();
        drain(self.tasks, SHUTDOWN_GRACE, "connections still open").await;
        let engine = Arc::clone(&self.nsqd.engine);
        tokio::task::spawn_blocking(move || engine.close()).await??;
        Ok(())
    }
}

/// Runs engine work that may wait for the disk without holding up other tasks, on this thread
/// when the runtime allows it (`block_in_place`: no hand-over to another thread and back, which
/// is most of the cost of a short write), else on tokio's blocking threads.
pub(crate) async fn blocking_here<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, EngineError> {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
        _ => blocking(work).await,
    }
}

/// Runs engine work that may wait for the disk on tokio's blocking threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, EngineError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => Err(EngineError::Io {
            op: "engine task",
            path: Default::default(),
            source: std::io::Error::other(join.to_string()),
        }),
    }
}
