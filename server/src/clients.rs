//! The connected TCP clients, for `/stats`: who they are (IDENTIFY), their state, what they
//! published, and which channel consumer they are. Delivery counters live in the engine's
//! consumer and are read from there.

use engine::sync::lock;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// V2 client states, as `/stats` shows them.
pub(crate) const STATE_INIT: i32 = 0;
pub(crate) const STATE_SUBSCRIBED: i32 = 3;
pub(crate) const STATE_CLOSING: i32 = 4;

#[derive(Debug, Default)]
pub(crate) struct Clients {
    next_id: AtomicU64,
    map: Mutex<BTreeMap<u64, Arc<Client>>>,
}

impl Clients {
    fn map(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Client>>> {
        lock(&self.map)
    }

    pub(crate) fn register(&self, remote: SocketAddr, connect_ts: i64) -> Arc<Client> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let meta = ClientMeta {
            client_id: remote.ip().to_string(),
            hostname: remote.ip().to_string(),
            ..ClientMeta::default()
        };
        let client = Arc::new(Client {
            id,
            remote,
            connect_ts,
            state: AtomicI32::new(STATE_INIT),
            meta: Mutex::new(meta),
        });
        self.map().insert(id, Arc::clone(&client));
        client
    }

    pub(crate) fn remove(&self, id: u64) {
        self.map().remove(&id);
    }

    /// Every client, by connection order.
    pub(crate) fn all(&self) -> Vec<Arc<Client>> {
        self.map().values().cloned().collect()
    }
}

#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) id: u64,
    pub(crate) remote: SocketAddr,
    /// Unix seconds.
    pub(crate) connect_ts: i64,
    pub(crate) state: AtomicI32,
    pub(crate) meta: Mutex<ClientMeta>,
}

impl Client {
    pub(crate) fn meta(&self) -> MutexGuard<'_, ClientMeta> {
        lock(&self.meta)
    }

    pub(crate) fn state(&self) -> i32 {
        self.state.load(Ordering::Acquire)
    }

    pub(crate) fn set_state(&self, state: i32) {
        self.state.store(state, Ordering::Release);
    }

    pub(crate) fn published(&self, topic: &str, count: u64) {
        *self.meta().pub_counts.entry(topic.to_owned()).or_default() += count;
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ClientMeta {
    pub(crate) client_id: String,
    pub(crate) hostname: String,
    pub(crate) user_agent: String,
    pub(crate) sample_rate: i32,
    pub(crate) topology_region: String,
    pub(crate) topology_zone: String,
    pub(crate) subscription: Option<Subscription>,
    /// Messages published per topic.
    pub(crate) pub_counts: BTreeMap<String, u64>,
    /// Set when the connection upgraded to TLS.
    pub(crate) tls: Option<crate::tls::Session>,
    pub(crate) compression: Option<protocol::compression::Compression>,
    /// Whether the last AUTH answer granted anything, and who the auth server says this is.
    pub(crate) authed: bool,
    pub(crate) auth_identity: String,
    pub(crate) auth_identity_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscription {
    pub(crate) topic: String,
    pub(crate) channel: String,
    /// The engine's id of this client's consumer.
    pub(crate) consumer_id: u64,
}
