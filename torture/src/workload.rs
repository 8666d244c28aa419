//! The clients of a torture cycle: publishers and consumers on raw V2 connections, reporting
//! everything they do to the [`Ledger`].
//!
//! A publisher sends PUB, MPUB (batches of random size) and DPUB (short random defers), one
//! command at a time, and waits for each answer: a message is recorded as sent before its command
//! leaves, and as acknowledged when the `OK` comes. It paces itself to a rate, and slows to a
//! trickle (one command per [`BACKLOG_TRICKLE`]) while the consumers are more than a backlog
//! behind, so that a run's backlog (and the final drain) stays bounded however long it runs, and
//! still every kill finds publishes under way.
//!
//! A consumer subscribes to one channel with a random RDY and does something random with each
//! message: FIN at once, FIN after holding it a while, TOUCH it then FIN, REQ it (at once or with a
//! short delay), or keep it in flight and unanswered. After a random number of deliveries it drops
//! its connection with whatever it holds, and connects again. So at any kill there are messages in
//! flight, requeued, deferred and half-finished. In drain mode a consumer FINs everything at once.
//!
//! When the cycle's stop flag is set (just before the SIGKILL) consumers stop reconnecting; every
//! client ends when nsqd's death closes its connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fastrand::Rng;
use protocol::command::Command;
use protocol::frame::Frame;
use tokio::time::Instant;

use crate::client::Conn;
use crate::ledger::{Event, Ledger};
use crate::payload::{self, Key};

/// A publisher's pause between commands while the consumers are more than the backlog behind.
pub const BACKLOG_TRICKLE: Duration = Duration::from_millis(25);

/// The topic all cycles publish to.
pub const TOPIC: &str = "torture";

/// The name of consumer channel `index`.
pub fn channel_name(index: usize) -> String {
    format!("ch{index}")
}

/// The knobs of the clients' behaviour.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Messages per second for each publisher; 0 for as fast as nsqd answers.
    pub rate_per_publisher: f64,
    /// Largest MPUB batch.
    pub max_batch: usize,
    /// Longest DPUB defer, ms.
    pub max_defer_ms: u64,
    /// Longest REQ delay, ms.
    pub max_req_ms: u64,
    /// Longest a consumer holds a message before acting on it, ms.
    pub max_hold_ms: u64,
    /// Largest filler in a body, bytes.
    pub max_filler: u16,
    /// Largest RDY a consumer sets.
    pub max_rdy: u64,
    /// Publishers slow to a trickle while more (acknowledged message, channel) pairs than this
    /// await a FIN.
    pub backlog: u64,
}

/// The ledger, shared by all clients.
pub type SharedLedger = Arc<Mutex<Ledger>>;

/// Locks the ledger (a panicked holder does not make its counts wrong).
pub fn lock(ledger: &SharedLedger) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the clients of one nsqd lifetime share.
#[derive(Debug, Clone)]
pub struct Clients {
    pub addr: SocketAddr,
    pub ledger: SharedLedger,
    /// Set just before the kill: do not reconnect.
    pub stop: Arc<AtomicBool>,
    pub workload: Arc<Workload>,
}

impl Clients {
    /// The clients of one nsqd run, not stopped.
    pub fn new(addr: SocketAddr, ledger: &SharedLedger, workload: &Workload) -> Self {
        Self {
            addr,
            ledger: Arc::clone(ledger),
            stop: Arc::new(AtomicBool::new(false)),
            workload: Arc::new(workload.clone()),
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Publishes as `producer` until its connection dies.
pub async fn publish(clients: Clients, producer: u16, mut rng: Rng) {
    let Ok(mut conn) = Conn::open(clients.addr).await else { return };
    let work = &clients.workload;
    let (run, mut seq) = {
        let ledger = lock(&clients.ledger);
        (ledger.run_id(), ledger.next_seq(producer))
    };
    let mut next_at = Instant::now();
    loop {
        // Over the backlog, slow to a trickle rather than stop: a kill should always find
        // publishes under way.
        if lock(&clients.ledger).outstanding() > work.backlog {
            tokio::time::sleep(BACKLOG_TRICKLE).await;
        }
        let roll = rng.u32(0..100);
        let (count, defer_ms) = if roll < 25 && work.max_batch > 1 {
            (rng.usize(2..=work.max_batch), 0)
        } else if roll < 40 && work.max_defer_ms > 0 {
            (1, rng.u64(1..=work.max_defer_ms))
        } else {
            (1, 0)
        };
        let deliver_after_ms = if defer_ms > 0 { unix_ms() + defer_ms } else { 0 };
        let mut keys = Vec::with_capacity(count);
        let mut bodies = Vec::with_capacity(count);
        {
            let mut ledger = lock(&clients.ledger);
            for _ in 0..count {
                let key = Key { producer, seq };
                seq += 1;
                let filler = rng.u16(0..=work.max_filler);
                let (body, crc) = payload::encode(run, key, deliver_after_ms, filler);
                ledger.sent(key, crc);
                keys.push(key);
                bodies.push(body);
            }
        }
        let sent = match &bodies[..] {
            [body] if defer_ms > 0 => {
                conn.send(Command::Dpub { topic: TOPIC, defer_ms, body }).await
            }
            [body] => conn.send(Command::Pub { topic: TOPIC, body }).await,
            _ => {
                let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
                conn.send(Command::Mpub { topic: TOPIC, bodies: &refs }).await
            }
        };
        if sent.is_err() {
            return;
        }
        match conn.frame().await {
            Ok(Frame::Response(ok)) if ok == "OK" => {
                let mut ledger = lock(&clients.ledger);
                keys.into_iter().for_each(|key| ledger.acked(key));
            }
            Ok(Frame::Error(error)) => {
                let mut ledger = lock(&clients.ledger);
                ledger.count(Event::PubError);
                let first = keys.first().map(Key::to_string).unwrap_or_default();
                let cycle = ledger.current().cycle;
                ledger.note(format!(
                    "cycle {cycle}: publish of {count} from {first} refused: {}",
                    String::from_utf8_lossy(&error)
                ));
            }
            Ok(other) => {
                let mut ledger = lock(&clients.ledger);
                let cycle = ledger.current().cycle;
                ledger.note(format!("cycle {cycle}: a publish was answered with {other:?}"));
                return;
            }
            Err(_) => return,
        }
        if work.rate_per_publisher > 0.0 {
            #[allow(clippy::cast_precision_loss)]
            let share = Duration::from_secs_f64(count as f64 / work.rate_per_publisher);
            let now = Instant::now();
            // Behind (the backlog held us back): start afresh rather than burst.
            let floor = now.checked_sub(Duration::from_millis(50)).unwrap_or(now);
            next_at = next_at.max(floor) + share;
            if next_at > now {
                tokio::time::sleep_until(next_at).await;
            }
        }
    }
}

/// How a consumer behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Random actions, holds and disconnects.
    Chaos,
    /// FIN everything at once, never disconnect.
    Drain,
}

/// What a consumer does next with a message it holds.
#[derive(Debug, Clone, Copy)]
enum Step {
    Fin,
    /// TOUCH, then FIN after this long.
    TouchThenFin(Duration),
    Req(u64),
}

#[derive(Debug)]
struct Held {
    id: [u8; 16],
    key: Option<Key>,
    /// `None`: held, unanswered, until the connection ends.
    due: Option<Instant>,
    step: Step,
}

/// Consumes channel `channel` until the cycle stops (or, in drain mode, until the connection
/// dies).
pub async fn consume(clients: Clients, channel: usize, mode: Mode, mut rng: Rng) {
    let name = channel_name(channel);
    let mut failures = 0u32;
    while !clients.stopping() {
        match session(&clients, channel, &name, mode, &mut rng).await {
            Ok(()) => lock(&clients.ledger).count(Event::Disconnect),
            Err(error) => {
                if clients.stopping() {
                    return;
                }
                // nsqd closed a connection (or refused one) while it was meant to be up.
                {
                    let mut ledger = lock(&clients.ledger);
                    ledger.count(Event::ConsumerError);
                    let cycle = ledger.current().cycle;
                    ledger.note(format!("cycle {cycle}: consumer on {name}: {error}"));
                }
                failures += 1;
                if failures > 20 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// One connection of a consumer; `Ok` when it dropped the connection on purpose.
async fn session(
    clients: &Clients,
    channel: usize,
    name: &str,
    mode: Mode,
    rng: &mut Rng,
) -> std::io::Result<()> {
    let work = &clients.workload;
    let mut conn = Conn::open(clients.addr).await?;
    conn.expect_ok(Command::Sub { topic: TOPIC, channel: name }).await?;
    let rdy = match mode {
        Mode::Chaos => rng.u64(1..=work.max_rdy.max(1)),
        Mode::Drain => 500,
    };
    conn.send(Command::Rdy(rdy)).await?;
    let disconnect_after = match mode {
        Mode::Chaos => Some(rng.u64(10..=400)),
        Mode::Drain => None,
    };
    let mut held: Vec<Held> = Vec::new();
    let mut deliveries = 0u64;
    loop {
        // `Conn::frame` is cancel-safe here: it only reads into its buffer, except for the NOP
        // answering a heartbeat, a 4-byte write that completes in its first poll.
        let frame = match held.iter().filter_map(|h| h.due).min() {
            Some(due) => tokio::time::timeout_at(due, conn.frame()).await.ok().transpose()?,
            None => Some(conn.frame().await?),
        };
        match frame {
            Some(Frame::Message(message)) => {
                deliveries += 1;
                let verdict = lock(&clients.ledger).delivered(channel, &message.body, unix_ms());
                let key = verdict.key();
                let stuck = held.iter().filter(|h| h.due.is_none()).count();
                let (due, step) = match (mode, key) {
                    (Mode::Chaos, Some(_)) => {
                        choose(rng, work, stuck < usize::try_from(rdy / 2).unwrap_or(0))
                    }
                    _ => (Some(Instant::now()), Step::Fin),
                };
                held.push(Held { id: message.id, key, due, step });
            }
            Some(Frame::Error(error)) => {
                let mut ledger = lock(&clients.ledger);
                ledger.count(Event::ConsumerError);
                let cycle = ledger.current().cycle;
                ledger.note(format!(
                    "cycle {cycle}: consumer on {name} got {}",
                    String::from_utf8_lossy(&error)
                ));
            }
            Some(Frame::Response(_)) | None => {}
        }
        let now = Instant::now();
        let mut at = 0;
        while at < held.len() {
            if held[at].due.is_none_or(|due| due > now) {
                at += 1;
                continue;
            }
            let mut message = held.swap_remove(at);
            match message.step {
                Step::Fin => {
                    conn.send(Command::Fin(&message.id)).await?;
                    lock(&clients.ledger).fin_sent(channel, message.key);
                }
                Step::TouchThenFin(after) => {
                    conn.send(Command::Touch(&message.id)).await?;
                    lock(&clients.ledger).count(Event::Touch);
                    message.due = Some(now + after);
                    message.step = Step::Fin;
                    held.push(message);
                }
                Step::Req(delay_ms) => {
                    conn.send(Command::Req { id: &message.id, timeout_ms: delay_ms }).await?;
                    lock(&clients.ledger).count(Event::Req);
                }
            }
        }
        if disconnect_after.is_some_and(|n| deliveries >= n) {
            return Ok(());
        }
    }
}

/// A random fate for a message: mostly FIN (at once or after a hold), some TOUCH then FIN,
/// some REQ, a few kept unanswered until the connection ends (`may_keep` bounds how many).
fn choose(rng: &mut Rng, work: &Workload, may_keep: bool) -> (Option<Instant>, Step) {
    let now = Instant::now();
    let hold = |rng: &mut Rng| Duration::from_millis(rng.u64(1..=work.max_hold_ms.max(1)));
    match rng.u32(0..100) {
        0..55 => (Some(now), Step::Fin),
        55..75 => (Some(now + hold(rng)), Step::Fin),
        75..85 => (Some(now + hold(rng)), Step::TouchThenFin(hold(rng))),
        85..95 => {
            let delay = if rng.bool() { 0 } else { rng.u64(1..=work.max_req_ms.max(1)) };
            (Some(now + hold(rng) / 4), Step::Req(delay))
        }
        _ if may_keep => (None, Step::Fin),
        _ => (Some(now), Step::Fin),
    }
}
