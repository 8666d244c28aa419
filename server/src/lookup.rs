//! nsqd's side of nsqlookupd (NSQ.md §4.3): one peer per `--lookupd-tcp-address`, each a
//! task that connects, IDENTIFYs, registers every topic and channel, then passes on the
//! engine's changes (REGISTER, UNREGISTER) and PINGs every `--lookupd-ping-interval` (15 s,
//! fixed in nsqd).
//!
//! - **Never in the way of publishing.** The engine's changes reach the peers through
//!   unbounded queues; a peer that is slow or gone only delays its own registrations. Each
//!   round trip has a 1 s deadline, after which the connection is dropped.
//! - **Reconnects with backoff** (1 s doubling to 15 s). While disconnected a peer drops what
//!   is queued: on reconnecting it registers the whole current set instead (nsqlookupd forgot
//!   this node's registrations when the connection closed).
//! - **Topic pre-creation.** When this node creates a topic, it asks each lookupd's HTTP API
//!   which channels the topic has elsewhere and creates them (ephemeral ones excepted), so
//!   those channels get the messages published here before their consumers arrive. This runs
//!   beside the publish, not before it as in nsqd: a slow lookupd does not delay a PUB.
//! - `PUT /config/nsqlookupd_tcp_addresses` replaces the set of peers at run time.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::BytesMut;
use engine::changes::Change;
use engine::sync::lock;
use protocol::lookup::{LookupCommand, LookupdInfo, PeerIdentity, decode_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::http_api::{send_v1, unexpected_reply};
use crate::nsqd::Nsqd;
use crate::options::NSQ_VERSION;

/// Dial timeout, and the deadline of each command's round trip.
const ROUND_TRIP: Duration = Duration::from_secs(1);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// A registration change, as sent to every peer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Registration {
    Register { topic: String, channel: Option<String> },
    Unregister { topic: String, channel: Option<String> },
}

impl Registration {
    fn command(&self) -> LookupCommand<'_> {
        match self {
            Self::Register { topic, channel } => {
                LookupCommand::Register { topic, channel: channel.as_deref() }
            }
            Self::Unregister { topic, channel } => {
                LookupCommand::Unregister { topic, channel: channel.as_deref() }
            }
        }
    }
}

/// The peers, by address, and what each lookupd said of itself.
#[derive(Debug)]
pub(crate) struct Lookup {
    peers: Mutex<BTreeMap<String, Peer>>,
    /// Filled in by each peer after IDENTIFY: where its HTTP API is.
    infos: Arc<Mutex<BTreeMap<String, LookupdInfo>>>,
    http: reqwest::Client,
    shutdown: CancellationToken,
    /// Engine changes arrive on whatever thread made them; the tasks they start run here.
    runtime: tokio::runtime::Handle,
}

#[derive(Debug)]
struct Peer {
    queue: mpsc::UnboundedSender<Registration>,
    stop: CancellationToken,
}

impl Lookup {
    pub(crate) fn new(http: reqwest::Client, shutdown: CancellationToken) -> Self {
        Self {
            peers: Mutex::new(BTreeMap::new()),
            infos: Arc::default(),
            http,
            shutdown,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The addresses of the peers.
    pub(crate) fn addresses(&self) -> Vec<String> {
        lock(&self.peers).keys().cloned().collect()
    }

    /// Starts peers for new addresses and stops those no longer listed.
    pub(crate) fn set_addresses(&self, nsqd: &Arc<Nsqd>, addresses: &[String]) {
        let mut peers = lock(&self.peers);
        peers.retain(|address, peer| {
            let keep = addresses.contains(address);
            if !keep {
                tracing::info!("LOOKUP: removing peer {address}");
                peer.stop.cancel();
                lock(&self.infos).remove(address);
            }
            keep
        });
        for address in addresses {
            if peers.contains_key(address) {
                continue;
            }
            tracing::info!("LOOKUP: adding peer {address}");
            let (queue, receiver) = mpsc::unbounded_channel();
            let stop = self.shutdown.child_token();
            let task = PeerTask {
                address: address.clone(),
                ping_interval: nsqd.options.lookupd_ping_interval.max(Duration::from_millis(1)),
                nsqd: Arc::downgrade(nsqd),
                infos: Arc::clone(&self.infos),
                queue: receiver,
                stop: stop.clone(),
            };
            self.runtime.spawn(task.run());
            peers.insert(address.clone(), Peer { queue, stop });
        }
    }

    /// Passes an engine change on to every peer; starts topic pre-creation for a new topic.
    pub(crate) fn changed(&self, nsqd: &Arc<Nsqd>, change: &Change) {
        let registration = match change {
            Change::TopicCreated(topic) => {
                self.precreate_channels(nsqd, topic);
                Registration::Register { topic: topic.clone(), channel: None }
            }
            Change::TopicDeleted(topic) => {
                Registration::Unregister { topic: topic.clone(), channel: None }
            }
            Change::ChannelCreated { topic, channel } => {
                Registration::Register { topic: topic.clone(), channel: Some(channel.clone()) }
            }
            Change::ChannelDeleted { topic, channel } => {
                Registration::Unregister { topic: topic.clone(), channel: Some(channel.clone()) }
            }
        };
        for peer in lock(&self.peers).values() {
            let _ = peer.queue.send(registration.clone());
        }
    }

    /// Asks every lookupd that has identified itself which channels `topic` has, and creates
    /// the durable ones here.
    fn precreate_channels(&self, nsqd: &Arc<Nsqd>, topic: &str) {
        let endpoints: Vec<String> = lock(&self.infos)
            .values()
            .filter(|info| !info.broadcast_address.is_empty() && info.http_port != 0)
            .map(lookupd_http)
            .collect();
        if endpoints.is_empty() {
            return;
        }
        let (http, nsqd, topic) = (self.http.clone(), Arc::downgrade(nsqd), topic.to_owned());
        self.runtime.spawn(async move {
            let mut names: Vec<String> = Vec::new();
            for endpoint in endpoints {
                match lookupd_channels(&http, &endpoint, &topic).await {
                    Ok(channels) => names.extend(channels),
                    Err(error) => {
                        tracing::error!("LOOKUP: channels of {topic} from {endpoint}: {error}");
                    }
                }
            }
            names.retain(|name| !engine::names::is_ephemeral(name));
            names.sort_unstable();
            names.dedup();
            let Some(nsqd) = nsqd.upgrade() else { return };
            if names.is_empty() {
                return;
            }
            let engine = Arc::clone(&nsqd.engine);
            let created = crate::nsqd::blocking(move || {
                let Some(topic) = engine.get_topic(&topic) else { return Ok(Vec::new()) };
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                topic.create_channels(&names)
            })
            .await;
            if let Err(error) = created {
                tracing::error!("LOOKUP: creating channels known to lookupd: {error}");
            }
        });
    }
}

/// A lookupd's HTTP API, as its IDENTIFY reply gives it.
fn lookupd_http(info: &LookupdInfo) -> String {
    let host = &info.broadcast_address;
    if host.contains(':') {
        format!("http://[{host}]:{}", info.http_port)
    } else {
        format!("http://{host}:{}", info.http_port)
    }
}

/// `GET /channels?topic=` on a lookupd.
async fn lookupd_channels(
    http: &reqwest::Client,
    endpoint: &str,
    topic: &str,
) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Channels {
        channels: Vec<String>,
    }
    let query: String =
        form_urlencoded::Serializer::new(String::new()).append_pair("topic", topic).finish();
    let (status, body) = send_v1(http.get(format!("{endpoint}/channels?{query}"))).await?;
    if status != reqwest::StatusCode::OK {
        return Err(unexpected_reply(status, &body));
    }
    let channels: Channels = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok(channels.channels)
}

/// One peer's connection loop.
struct PeerTask {
    address: String,
    /// `--lookupd-ping-interval`.
    ping_interval: Duration,
    nsqd: Weak<Nsqd>,
    infos: Arc<Mutex<BTreeMap<String, LookupdInfo>>>,
    queue: mpsc::UnboundedReceiver<Registration>,
    stop: CancellationToken,
}

/// An open connection to a lookupd.
struct Connection {
    stream: TcpStream,
    buf: BytesMut,
    max_reply: usize,
}

impl Connection {
    /// Sends a command and reads its reply, within [`ROUND_TRIP`].
    async fn round_trip(&mut self, command: LookupCommand<'_>) -> io::Result<bytes::Bytes> {
        let exchange = async {
            self.stream.write_all(&command.to_bytes()).await?;
            loop {
                if let Some(reply) = decode_response(&mut self.buf, self.max_reply)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
                {
                    return Ok(reply);
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        };
        tokio::time::timeout(ROUND_TRIP, exchange)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply within 1s"))?
    }
}

impl PeerTask {
    async fn run(mut self) {
        let mut backoff = BACKOFF_START;
        loop {
            match self.connect().await {
                Ok(connection) => {
                    backoff = BACKOFF_START;
                    self.serve(connection).await;
                    lock(&self.infos).remove(&self.address);
                }
                Err(error) => {
                    tracing::error!("LOOKUPD({}): connecting failed - {error}", self.address);
                }
            }
            if self.stop.is_cancelled() || self.nsqd.strong_count() == 0 {
                return;
            }
            // Until the next attempt, queued changes are dropped: reconnecting registers all.
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = &mut wait => break,
                    received = self.queue.recv() => if received.is_none() { return },
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Connects, IDENTIFYs and registers every topic and channel there is.
    async fn connect(&mut self) -> io::Result<Connection> {
        let stream = tokio::time::timeout(ROUND_TRIP, TcpStream::connect(&self.address))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "dial timed out"))??;
        let Some(nsqd) = self.nsqd.upgrade() else {
            return Err(io::Error::other("nsqd is gone"));
        };
        let max_reply = usize::try_from(nsqd.options.max_body_size).unwrap_or(usize::MAX);
        let mut connection = Connection { stream, buf: BytesMut::new(), max_reply };
        connection.stream.write_all(protocol::lookup::MAGIC_V1).await?;
        // What is queued now is in the snapshot taken below.
        while self.queue.try_recv().is_ok() {}
        let identity = PeerIdentity {
            broadcast_address: nsqd.broadcast_address.clone(),
            hostname: nsqd.hostname.clone(),
            tcp_port: nsqd.broadcast_tcp_port,
            http_port: nsqd.broadcast_http_port,
            version: NSQ_VERSION.to_owned(),
            topology_zone: String::new(),
            topology_region: String::new(),
        };
        let body = serde_json::to_vec(&identity).map_err(io::Error::other)?;
        let reply = connection.round_trip(LookupCommand::Identify(&body)).await?;
        let info: LookupdInfo = serde_json::from_slice(&reply).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("IDENTIFY answered {:?}", String::from_utf8_lossy(&reply)),
            )
        })?;
        tracing::info!("LOOKUPD({}): peer info {info:?}", self.address);
        lock(&self.infos).insert(self.address.clone(), info);
        for registration in snapshot(&nsqd) {
            self.send(&mut connection, &registration).await?;
        }
        Ok(connection)
    }

    async fn send(
        &self,
        connection: &mut Connection,
        registration: &Registration,
    ) -> io::Result<()> {
        let command = registration.command();
        let reply = connection.round_trip(command).await?;
        if reply.as_ref() != protocol::OK {
            tracing::error!(
                "LOOKUPD({}): {command:?} - {}",
                self.address,
                String::from_utf8_lossy(&reply)
            );
        }
        Ok(())
    }

    /// Passes on changes and PINGs until the connection fails or the peer is stopped.
    async fn serve(&mut self, mut connection: Connection) {
        let every = self.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let result: io::Result<()> = loop {
            tokio::select! {
                () = self.stop.cancelled() => break Ok(()),
                _ = ping.tick() => {
                    if let Err(error) = connection.round_trip(LookupCommand::Ping).await {
                        break Err(error);
                    }
                }
                received = self.queue.recv() => match received {
                    Some(registration) => {
                        tracing::info!("LOOKUPD({}): {:?}", self.address, registration.command());
                        if let Err(error) = self.send(&mut connection, &registration).await {
                            break Err(error);
                        }
                    }
                    None => break Ok(()),
                },
            }
        };
        if let Err(error) = result {
            tracing::error!("LOOKUPD({}): connection lost - {error}", self.address);
        }
    }
}

/// Every topic without channels, and every channel: what a new connection registers.
fn snapshot(nsqd: &Nsqd) -> Vec<Registration> {
    let mut registrations = Vec::new();
    for topic in nsqd.engine.topics() {
        let channels = topic.channels();
        if channels.is_empty() {
            let topic = topic.name().to_owned();
            registrations.push(Registration::Register { topic, channel: None });
        }
        for channel in channels {
            registrations.push(Registration::Register {
                topic: topic.name().to_owned(),
                channel: Some(channel.name().to_owned()),
            });
        }
    }
    registrations
}
