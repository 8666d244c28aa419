//! The registration database (NSQ's `RegistrationDB`, NSQ.md §4.2 and §4.4): which nsqd
//! ("producer") has which topics and channels, as the nsqds said over TCP, and the keys made
//! over HTTP.
//!
//! The rules, as NSQ has them:
//! - Every identified peer is registered as a "client"; REGISTER adds it under its topic, and
//!   with a channel under that channel too.
//! - Removing a producer leaves its topic or channel key in place with no producers, so topics
//!   and channels stay listed until deleted over HTTP. The exception is an `#ephemeral` topic
//!   or channel, whose key goes with its last producer on UNREGISTER.
//! - A producer is *inactive* once its peer's last IDENTIFY or PING is more than
//!   `--inactive-producer-timeout` old: hidden from `/lookup` and `/nodes`, not removed.
//! - A *tombstoned* producer of a topic is hidden from `/lookup` for `--tombstone-lifetime`,
//!   so consumers stop finding it while its node deletes the topic; `/nodes` shows it, flagged.
//!   After the lifetime it shows again if it is still registered.
//!
//! Maps are ordered, so listings come out sorted by name (NSQ's come in Go's map order), and
//! producers in the order they connected. Every method takes the lock once.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use engine::names::is_ephemeral;
use protocol::lookup::PeerIdentity;
use serde::Serialize;
use serde_json::{Value, json};

use super::clock::{Clock, nanos};

/// Go's zero `time.Time` as `UnixNano()` (an overflow Go leaves as it is): what NSQ's `/debug`
/// shows as `tombstoned_at` for a producer never tombstoned.
const GO_ZERO_TIME_UNIX_NANO: i64 = -6_795_364_578_871_345_152;

/// One connection's nsqd, once it has identified.
#[derive(Debug)]
pub(crate) struct Peer {
    /// Unique for the life of the process (NSQ keys peers by their remote address, which a
    /// later connection may reuse).
    id: u64,
    /// The connection's remote `ip:port`.
    pub(crate) remote_address: String,
    pub(crate) identity: PeerIdentity,
    /// Unix nanoseconds of the last IDENTIFY or PING.
    last_update_ns: AtomicI64,
}

#[derive(Debug, Clone)]
struct Producer {
    peer: Arc<Peer>,
    /// Unix nanoseconds of the last `/topic/tombstone` naming this producer of this topic.
    tombstoned_at_ns: Option<i64>,
}

impl Producer {
    fn of(peer: &Arc<Peer>) -> Producer {
        Producer { peer: Arc::clone(peer), tombstoned_at_ns: None }
    }
}

/// A registration's producers, by peer ID.
type Producers = BTreeMap<u64, Producer>;

#[derive(Debug, Default)]
struct Db {
    /// The "client" registration: every identified peer.
    clients: Producers,
    topics: BTreeMap<String, Producers>,
    /// Topic, then channel.
    channels: BTreeMap<String, BTreeMap<String, Producers>>,
}

impl Db {
    fn remove_channel(&mut self, topic: &str, channel: &str) {
        if let Some(channels) = self.channels.get_mut(topic) {
            channels.remove(channel);
            if channels.is_empty() {
                self.channels.remove(topic);
            }
        }
    }
}

/// A producer as `/lookup` shows it (NSQ's `PeerInfo`, in its key order).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PeerInfo {
    remote_address: String,
    hostname: String,
    broadcast_address: String,
    tcp_port: u16,
    http_port: u16,
    version: String,
    topology_zone: String,
    topology_region: String,
}

impl From<&Peer> for PeerInfo {
    fn from(peer: &Peer) -> Self {
        let identity = peer.identity.clone();
        PeerInfo {
            remote_address: peer.remote_address.clone(),
            hostname: identity.hostname,
            broadcast_address: identity.broadcast_address,
            tcp_port: identity.tcp_port,
            http_port: identity.http_port,
            version: identity.version,
            topology_zone: identity.topology_zone,
            topology_region: identity.topology_region,
        }
    }
}

/// `/lookup`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct Lookup {
    channels: Vec<String>,
    producers: Vec<PeerInfo>,
}

/// A node as `/nodes` shows it: its topics, each with whether it is tombstoned there.
#[derive(Debug, Serialize)]
pub(crate) struct Node {
    #[serde(flatten)]
    peer: PeerInfo,
    tombstones: Vec<bool>,
    topics: Vec<String>,
}

/// The registrations, with the clock and the two durations that judge their producers.
#[derive(Debug)]
pub(crate) struct Registry {
    db: Mutex<Db>,
    clock: Clock,
    inactive_producer_timeout_ns: i64,
    tombstone_lifetime_ns: i64,
    next_peer_id: AtomicU64,
}

/// A registration change, logged as nsqlookupd logs it.
fn log_change(peer: &Peer, change: &str, category: &str, key: &str, subkey: &str) {
    tracing::info!(
        "DB: client({}) {change} category:{category} key:{key} subkey:{subkey}",
        peer.remote_address
    );
}

impl Registry {
    pub(crate) fn new(
        clock: Clock,
        inactive_producer_timeout: Duration,
        tombstone_lifetime: Duration,
    ) -> Registry {
        Registry {
            db: Mutex::default(),
            clock,
            inactive_producer_timeout_ns: nanos(inactive_producer_timeout),
            tombstone_lifetime_ns: nanos(tombstone_lifetime),
            next_peer_id: AtomicU64::new(0),
        }
    }

    /// Nothing under the lock can panic; if something did, a registration half made is
    /// harmless, so the lock is taken even when poisoned.
    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_active(&self, peer: &Peer, now_ns: i64) -> bool {
        let last_update_ns = peer.last_update_ns.load(Ordering::Acquire);
        now_ns.saturating_sub(last_update_ns) <= self.inactive_producer_timeout_ns
    }

    fn is_tombstoned(&self, producer: &Producer, now_ns: i64) -> bool {
        producer
            .tombstoned_at_ns
            .is_some_and(|at| now_ns.saturating_sub(at) < self.tombstone_lifetime_ns)
    }

    /// Registers a peer that has just identified, as a "client".
    pub(crate) fn identify(&self, remote_address: String, identity: PeerIdentity) -> Arc<Peer> {
        let peer = Arc::new(Peer {
            id: self.next_peer_id.fetch_add(1, Ordering::Relaxed),
            remote_address,
            identity,
            last_update_ns: AtomicI64::new(self.clock.now_ns()),
        });
        self.db().clients.insert(peer.id, Producer::of(&peer));
        log_change(&peer, "REGISTER", "client", "", "");
        peer
    }

    /// A PING: the peer is alive now. Returns how long it was since its last update.
    pub(crate) fn touch(&self, peer: &Peer) -> Duration {
        let now_ns = self.clock.now_ns();
        let before_ns = peer.last_update_ns.swap(now_ns, Ordering::AcqRel);
        Duration::from_nanos(u64::try_from(now_ns.saturating_sub(before_ns)).unwrap_or(0))
    }

    /// REGISTER: the peer has `topic`, and `channel` in it when given.
    pub(crate) fn register(&self, peer: &Arc<Peer>, topic: &str, channel: Option<&str>) {
        let mut db = self.db();
        let add = |producers: &mut Producers, category: &str, subkey: &str| {
            if let Entry::Vacant(vacant) = producers.entry(peer.id) {
                vacant.insert(Producer::of(peer));
                log_change(peer, "REGISTER", category, topic, subkey);
            }
        };
        if let Some(channel) = channel {
            let channels = db.channels.entry(topic.to_owned()).or_default();
            add(channels.entry(channel.to_owned()).or_default(), "channel", channel);
        }
        add(db.topics.entry(topic.to_owned()).or_default(), "topic", "");
    }

    /// UNREGISTER: the peer no longer has `channel`, or without one, `topic` and every channel
    /// in it. An ephemeral key left without producers goes.
    pub(crate) fn unregister(&self, peer: &Peer, topic: &str, channel: Option<&str>) {
        let mut db = self.db();
        if let Some(channel) = channel {
            let Some(producers) = db.channels.get_mut(topic).and_then(|c| c.get_mut(channel))
            else {
                return;
            };
            if producers.remove(&peer.id).is_some() {
                log_change(peer, "UNREGISTER", "channel", topic, channel);
            }
            if producers.is_empty() && is_ephemeral(channel) {
                db.remove_channel(topic, channel);
            }
            return;
        }
        // nsqd unregisters its channels before their topic; any left are unexpected.
        for (channel, producers) in db.channels.get_mut(topic).into_iter().flatten() {
            if producers.remove(&peer.id).is_some() {
                tracing::warn!(
                    "client({}) unexpected UNREGISTER category:channel key:{topic} subkey:{channel}",
                    peer.remote_address
                );
            }
        }
        let Some(producers) = db.topics.get_mut(topic) else { return };
        if producers.remove(&peer.id).is_some() {
            log_change(peer, "UNREGISTER", "topic", topic, "");
        }
        if producers.is_empty() && is_ephemeral(topic) {
            db.topics.remove(topic);
        }
    }

    /// The peer's connection closed: it leaves every registration (the keys stay).
    pub(crate) fn remove_peer(&self, peer: &Peer) {
        let mut db = self.db();
        if db.clients.remove(&peer.id).is_some() {
            log_change(peer, "UNREGISTER", "client", "", "");
        }
        for (topic, producers) in &mut db.topics {
            if producers.remove(&peer.id).is_some() {
                log_change(peer, "UNREGISTER", "topic", topic, "");
            }
        }
        for (topic, channels) in &mut db.channels {
            for (channel, producers) in channels {
                if producers.remove(&peer.id).is_some() {
                    log_change(peer, "UNREGISTER", "channel", topic, channel);
                }
            }
        }
    }

    /// Every topic key.
    pub(crate) fn topics(&self) -> Vec<String> {
        self.db().topics.keys().cloned().collect()
    }

    /// The channel keys of `topic`.
    pub(crate) fn channels(&self, topic: &str) -> Vec<String> {
        self.db().channels.get(topic).map(|c| c.keys().cloned().collect()).unwrap_or_default()
    }

    /// The channels of `topic` and its active producers that are not tombstoned, or `None`
    /// without a topic key.
    pub(crate) fn lookup(&self, topic: &str) -> Option<Lookup> {
        let now_ns = self.clock.now_ns();
        let db = self.db();
        let producers = db
            .topics
            .get(topic)?
            .values()
            .filter(|p| self.is_active(&p.peer, now_ns) && !self.is_tombstoned(p, now_ns))
            .map(|p| PeerInfo::from(&*p.peer))
            .collect();
        let channels =
            db.channels.get(topic).map(|c| c.keys().cloned().collect()).unwrap_or_default();
        Some(Lookup { channels, producers })
    }

    /// Every active peer, tombstoned or not, with its topics.
    pub(crate) fn nodes(&self) -> Vec<Node> {
        let now_ns = self.clock.now_ns();
        let db = self.db();
        let active = db.clients.values().filter(|c| self.is_active(&c.peer, now_ns));
        active
            .map(|client| {
                let id = client.peer.id;
                let (topics, tombstones) = db
                    .topics
                    .iter()
                    .filter_map(|(topic, producers)| {
                        let producer = producers.get(&id)?;
                        Some((topic.clone(), self.is_tombstoned(producer, now_ns)))
                    })
                    .unzip();
                Node { peer: PeerInfo::from(&*client.peer), tombstones, topics }
            })
            .collect()
    }

    /// `/debug`: every registration that has producers, as `category:key:subkey`, with
    /// each producer's full record.
    pub(crate) fn debug(&self) -> BTreeMap<String, Vec<Value>> {
        let now_ns = self.clock.now_ns();
        let db = self.db();
        let entry = |producer: &Producer| {
            let peer = &producer.peer;
            let identity = &peer.identity;
            json!({
                "id": peer.remote_address,
                "hostname": identity.hostname,
                "broadcast_address": identity.broadcast_address,
                "tcp_port": identity.tcp_port,
                "http_port": identity.http_port,
                "version": identity.version,
                "topology_zone": identity.topology_zone,
                "topology_region": identity.topology_region,
                "last_update": peer.last_update_ns.load(Ordering::Acquire),
                "tombstoned": self.is_tombstoned(producer, now_ns),
                "tombstoned_at": producer.tombstoned_at_ns.unwrap_or(GO_ZERO_TIME_UNIX_NANO),
            })
        };
        let clients = std::iter::once(("client::".to_owned(), &db.clients));
        let topics = db.topics.iter().map(|(topic, p)| (format!("topic:{topic}:"), p));
        let channels = db.channels.iter().flat_map(|(topic, channels)| {
            channels.iter().map(move |(channel, p)| (format!("channel:{topic}:{channel}"), p))
        });
        clients
            .chain(topics)
            .chain(channels)
            .filter(|(_, producers)| !producers.is_empty())
            .map(|(key, producers)| (key, producers.values().map(entry).collect()))
            .collect()
    }

    /// `/topic/create`: a topic key with no producers.
    pub(crate) fn add_topic(&self, topic: &str) {
        tracing::info!("DB: adding topic({topic})");
        self.db().topics.entry(topic.to_owned()).or_default();
    }

    /// `/topic/delete`: the topic's channel keys, then its key, with their producers.
    pub(crate) fn delete_topic(&self, topic: &str) {
        let mut db = self.db();
        for channel in db.channels.remove(topic).into_iter().flat_map(BTreeMap::into_keys) {
            tracing::info!("DB: removing channel({channel}) from topic({topic})");
        }
        if db.topics.remove(topic).is_some() {
            tracing::info!("DB: removing topic({topic})");
        }
    }

    /// `/channel/create`: a channel key, and its topic's, with no producers.
    pub(crate) fn add_channel(&self, topic: &str, channel: &str) {
        tracing::info!("DB: adding channel({channel}) in topic({topic})");
        tracing::info!("DB: adding topic({topic})");
        let mut db = self.db();
        db.channels.entry(topic.to_owned()).or_default().entry(channel.to_owned()).or_default();
        db.topics.entry(topic.to_owned()).or_default();
    }

    /// `/channel/delete`: false when there is no such channel key.
    pub(crate) fn delete_channel(&self, topic: &str, channel: &str) -> bool {
        let mut db = self.db();
        if !db.channels.get(topic).is_some_and(|c| c.contains_key(channel)) {
            return false;
        }
        tracing::info!("DB: removing channel({channel}) from topic({topic})");
        db.remove_channel(topic, channel);
        true
    }

    /// `/topic/tombstone`: tombstones, from now, the producers of `topic` whose
    /// `broadcast_address:http_port` is `node`.
    pub(crate) fn tombstone(&self, topic: &str, node: &str) {
        tracing::info!("DB: setting tombstone for producer@{node} of topic({topic})");
        let now_ns = self.clock.now_ns();
        let mut db = self.db();
        for producer in db.topics.get_mut(topic).into_iter().flat_map(BTreeMap::values_mut) {
            let identity = &producer.peer.identity;
            if format!("{}:{}", identity.broadcast_address, identity.http_port) == node {
                producer.tombstoned_at_ns = Some(now_ns);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn identity(address: &str) -> PeerIdentity {
        PeerIdentity {
            broadcast_address: address.to_owned(),
            tcp_port: 4150,
            http_port: 4151,
            version: "1.3.0".to_owned(),
            ..PeerIdentity::default()
        }
    }

    fn registry() -> (Registry, Clock) {
        let clock = Clock::manual(1_000_000_000_000);
        let registry =
            Registry::new(clock.clone(), Duration::from_secs(300), Duration::from_secs(45));
        (registry, clock)
    }

    fn producers(registry: &Registry, topic: &str) -> Vec<String> {
        let lookup = registry.lookup(topic).unwrap();
        lookup.producers.into_iter().map(|p| p.broadcast_address).collect()
    }

    #[test]
    fn keys_outlive_their_producers_except_ephemeral_ones() {
        let (registry, _) = registry();
        let peer = registry.identify("127.0.0.1:1".to_owned(), identity("a"));
        registry.register(&peer, "t", Some("c"));
        registry.register(&peer, "t", Some("e#ephemeral"));
        registry.register(&peer, "t#ephemeral", None);
        registry.unregister(&peer, "t", Some("c"));
        registry.unregister(&peer, "t", Some("e#ephemeral"));
        registry.unregister(&peer, "t#ephemeral", None);
        assert_eq!(registry.channels("t"), ["c"]);
        assert_eq!(registry.topics(), ["t"]);
        assert_eq!(producers(&registry, "t"), ["a"], "the topic registration stays");
        registry.remove_peer(&peer);
        assert!(producers(&registry, "t").is_empty());
        assert!(registry.debug().is_empty(), "no registration has producers");
    }

    #[test]
    fn activity_and_tombstones_follow_the_clock_at_their_exact_bounds() {
        let (registry, clock) = registry();
        let a = registry.identify("127.0.0.1:1".to_owned(), identity("a"));
        let b = registry.identify("127.0.0.1:2".to_owned(), identity("b"));
        registry.register(&a, "t", None);
        registry.register(&b, "t", None);
        registry.tombstone("t", "a:4151");
        assert_eq!(producers(&registry, "t"), ["b"]);
        assert_eq!(
            registry.nodes().iter().map(|n| n.tombstones.clone()).collect::<Vec<_>>(),
            [[true], [false]]
        );
        clock.advance(Duration::from_secs(45) - Duration::from_nanos(1));
        assert_eq!(producers(&registry, "t"), ["b"]);
        clock.advance(Duration::from_nanos(1));
        assert_eq!(producers(&registry, "t"), ["a", "b"], "tombstones last their lifetime");
        registry.touch(&b);
        clock.advance(Duration::from_secs(300) - Duration::from_secs(45));
        assert_eq!(producers(&registry, "t"), ["a", "b"], "inactive only past the timeout");
        clock.advance(Duration::from_nanos(1));
        assert_eq!(producers(&registry, "t"), ["b"]);
        assert_eq!(registry.nodes().len(), 1);
    }
}
