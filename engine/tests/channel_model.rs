//! The channel beside a model of NSQ's channel semantics, under random publish / dispatch / FIN /
//! REQ / TOUCH / time / checkpoint / crash / reopen sequences.
//!
//! What is checked, at every step:
//! - **No wrong delivery.** A message is delivered only if it is acknowledged, not in flight
//!   (unless its deadline passed), not finished — except a FIN made after the last checkpoint and
//!   undone by a crash — and not before its DPUB or REQ time (a crash may forget a REQ delay,
//!   never a DPUB time).
//! - **No stall.** A ready consumer is refused only when the model has nothing deliverable.
//! - **The crash invariant**, at the end: after advancing past every deadline, draining the
//!   channel delivers every acknowledged message that was not finished, in flight and deferred
//!   ones included.

// A failed unwrap in a test is a failed assertion; the lint guards library code against input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Harness;
use engine::clock::Clock;
use engine::log::LogConfig;
use engine::storage::CrashKeep;
use engine::{Consumer, Engine, EngineConfig, SyncPolicy};
use proptest::prelude::*;

const MSG_TIMEOUT_NS: i64 = 60_000_000_000;
const MAX_MSG_TIMEOUT_NS: i64 = 15 * 60_000_000_000;
const RDY: u64 = 3;
const SLOTS: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Publish { count: u8, defer_ms: u32 },
    Dispatch { slot: usize },
    DispatchMany { slot: usize, max: usize },
    FinAll { slot: usize },
    Fin { slot: usize, pick: usize },
    Req { slot: usize, pick: usize, delay_ms: u32 },
    Touch { slot: usize, pick: usize },
    Disconnect { slot: usize },
    Advance { ms: u32 },
    Checkpoint,
    Crash,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let delay = prop_oneof![Just(0u32), Just(500), Just(5_000), Just(90_000)];
    prop_oneof![
        3 => (1u8..4, prop_oneof![3 => Just(0u32), 1 => Just(2_000), 1 => Just(70_000)])
            .prop_map(|(count, defer_ms)| Op::Publish { count, defer_ms }),
        6 => slot.clone().prop_map(|slot| Op::Dispatch { slot }),
        2 => (slot.clone(), 2usize..6).prop_map(|(slot, max)| Op::DispatchMany { slot, max }),
        1 => slot.clone().prop_map(|slot| Op::FinAll { slot }),
        4 => (slot.clone(), any::<usize>()).prop_map(|(slot, pick)| Op::Fin { slot, pick }),
        2 => (slot.clone(), any::<usize>(), delay)
            .prop_map(|(slot, pick, delay_ms)| Op::Req { slot, pick, delay_ms }),
        1 => (slot.clone(), any::<usize>()).prop_map(|(slot, pick)| Op::Touch { slot, pick }),
        1 => slot.prop_map(|slot| Op::Disconnect { slot }),
        3 => prop_oneof![Just(1_000u32), Just(30_000), Just(61_000), Just(100_000)]
            .prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Pending,
    InFlight {
        slot: usize,
        deadline_ns: i64,
        delivered_ns: i64,
    },
    /// FIN'd after the last checkpoint.
    FinishedVolatile,
    /// FIN'd before the last checkpoint, or before a clean close.
    FinishedDurable,
    /// FIN'd, then a crash came before a checkpoint: it may or may not come back.
    MayReturn,
}

#[derive(Debug, Clone, Copy)]
struct Message {
    fate: Fate,
    /// Never delivered before this (DPUB time; REQ time until a crash).
    not_before_min_ns: i64,
    /// Surely deliverable from this on (the engine may hold a REQ delay a crash did not lose).
    not_before_max_ns: i64,
    dpub_ns: i64,
    deliveries: u16,
    offset: u64,
}

struct World {
    h: Harness,
    engine: Option<Engine>,
    consumers: [Option<Consumer>; SLOTS],
    messages: BTreeMap<u64, Message>,
    next_body: u64,
    crashed: bool,
    power_loss: bool,
}

impl World {
    fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    fn now(&self) -> i64 {
        self.h.clock.now_ns()
    }

    fn consumer(&mut self, slot: usize) -> &Consumer {
        if self.consumers[slot].is_none() {
            let channel = self.engine().topic("t").unwrap().channel("c").unwrap();
            let consumer = channel.subscribe(None).unwrap();
            consumer.set_ready(RDY);
            self.consumers[slot] = Some(consumer);
        }
        self.consumers[slot].as_ref().unwrap()
    }

    fn in_flight_of(&self, slot: usize) -> Vec<u64> {
        let now = self.now();
        self.messages
            .iter()
            .filter(|(_, m)| {
                matches!(m.fate, Fate::InFlight { slot: s, deadline_ns, .. }
                    if s == slot && deadline_ns > now)
            })
            .map(|(&body, _)| body)
            .collect()
    }

    /// Applies the model's timeouts: an in-flight message past its deadline is pending again.
    fn expire(&mut self) {
        let now = self.now();
        for m in self.messages.values_mut() {
            if let Fate::InFlight { deadline_ns, .. } = m.fate
                && deadline_ns <= now
            {
                m.fate = Fate::Pending;
            }
        }
    }

    fn drop_consumers(&mut self) {
        for slot in 0..SLOTS {
            self.consumers[slot] = None;
        }
        for m in self.messages.values_mut() {
            if matches!(m.fate, Fate::InFlight { .. }) {
                m.fate = Fate::Pending;
            }
        }
    }

    /// Takes up to `max` messages (one by one with `next_message` when `max` is 1, else with
    /// `next_messages`), checks each as if taken alone, and a short batch as a refusal.
    fn dispatch(&mut self, slot: usize, max: usize) -> Result<(), TestCaseError> {
        self.engine().fire_timers();
        self.expire();
        let mut deliveries = Vec::new();
        if max == 1 {
            deliveries.extend(self.consumer(slot).next_message().unwrap());
        } else {
            let taken = self.consumer(slot).next_messages(max, &mut deliveries).unwrap();
            prop_assert_eq!(taken, deliveries.len());
        }
        let refused = deliveries.len() < max;
        for delivery in deliveries {
            self.check_delivery(slot, &delivery)?;
        }
        if refused {
            let ready = (self.in_flight_of(slot).len() as u64) < RDY;
            let now = self.now();
            let deliverable = self
                .messages
                .iter()
                .find(|(_, m)| matches!(m.fate, Fate::Pending) && m.not_before_max_ns <= now);
            prop_assert!(
                !ready || deliverable.is_none(),
                "ready consumer refused while {:?} is deliverable",
                deliverable
            );
        }
        Ok(())
    }

    fn check_delivery(
        &mut self,
        slot: usize,
        delivery: &engine::Delivery,
    ) -> Result<(), TestCaseError> {
        let ready = (self.in_flight_of(slot).len() as u64) < RDY;
        let now = self.now();
        prop_assert!(ready, "delivered beyond RDY");
        let body: u64 = std::str::from_utf8(&delivery.body).unwrap().parse().unwrap();
        let Some(m) = self.messages.get_mut(&body) else {
            return Err(TestCaseError::fail(format!("delivered {body}, never acknowledged")));
        };
        let allowed = match m.fate {
            Fate::Pending | Fate::MayReturn => true,
            Fate::InFlight { .. } | Fate::FinishedVolatile | Fate::FinishedDurable => false,
        };
        prop_assert!(allowed, "delivered {} in state {:?}", body, m.fate);
        prop_assert!(now >= m.not_before_min_ns, "{} delivered before its time", body);
        prop_assert!(now >= m.dpub_ns, "{} delivered before its DPUB time", body);
        m.deliveries += 1;
        if !self.crashed {
            prop_assert_eq!(delivery.attempts, m.deliveries, "attempts of {}", body);
        }
        m.fate = Fate::InFlight { slot, deadline_ns: now + MSG_TIMEOUT_NS, delivered_ns: now };
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Publish { count, defer_ms } => {
                let bodies: Vec<String> =
                    (0..count).map(|i| (self.next_body + u64::from(i)).to_string()).collect();
                let slices: Vec<&[u8]> = bodies.iter().map(|b| b.as_bytes()).collect();
                let defer = Duration::from_millis(u64::from(defer_ms));
                let now = self.now();
                let offsets = self.engine().topic("t").unwrap().publish(&slices, defer).unwrap();
                let due = if defer_ms == 0 { 0 } else { now + i64::from(defer_ms) * 1_000_000 };
                for i in 0..u64::from(count) {
                    let m = Message {
                        fate: Fate::Pending,
                        not_before_min_ns: due,
                        not_before_max_ns: due,
                        dpub_ns: due,
                        deliveries: 0,
                        offset: offsets.start + i,
                    };
                    self.messages.insert(self.next_body + i, m);
                }
                self.next_body += u64::from(count);
            }
            Op::Dispatch { slot } => self.dispatch(slot, 1)?,
            Op::DispatchMany { slot, max } => self.dispatch(slot, max)?,
            Op::FinAll { slot } => {
                self.engine().fire_timers();
                self.expire();
                let Some(consumer) = self.consumers[slot].as_ref() else { return Ok(()) };
                let owned = self.in_flight_of(slot);
                // An ID never handed out sits among the real ones and fails alone.
                let mut ids: Vec<_> = owned
                    .iter()
                    .map(|body| engine::message_id::message_id(self.messages[body].offset))
                    .collect();
                let unknown = ids.len() / 2;
                ids.insert(unknown, engine::message_id::message_id(u64::MAX >> 1));
                let mut failed = Vec::new();
                consumer.finish_all(&ids, |index, error| failed.push((index, error)));
                prop_assert_eq!(failed, vec![(unknown, engine::MessageError::NotInFlight)]);
                for body in owned {
                    self.messages.get_mut(&body).unwrap().fate = Fate::FinishedVolatile;
                }
            }
            Op::Fin { slot, pick } | Op::Req { slot, pick, .. } | Op::Touch { slot, pick } => {
                self.engine().fire_timers();
                self.expire();
                let owned = self.in_flight_of(slot);
                if owned.is_empty() || self.consumers[slot].is_none() {
                    return Ok(());
                }
                let body = owned[pick % owned.len()];
                let now = self.now();
                let id = engine::message_id::message_id(self.messages[&body].offset);
                let consumer = self.consumers[slot].as_ref().unwrap();
                let m = self.messages.get_mut(&body).unwrap();
                match *op {
                    Op::Fin { .. } => {
                        consumer.finish(&id).unwrap();
                        m.fate = Fate::FinishedVolatile;
                    }
                    Op::Req { delay_ms, .. } => {
                        consumer.requeue(&id, Duration::from_millis(u64::from(delay_ms))).unwrap();
                        let due = now + i64::from(delay_ms) * 1_000_000;
                        m.fate = Fate::Pending;
                        m.not_before_min_ns = due.max(m.dpub_ns);
                        m.not_before_max_ns = due.max(m.dpub_ns);
                    }
                    _ => {
                        consumer.touch(&id).unwrap();
                        if let Fate::InFlight { slot, delivered_ns, .. } = m.fate {
                            let deadline_ns =
                                (now + MSG_TIMEOUT_NS).min(delivered_ns + MAX_MSG_TIMEOUT_NS);
                            m.fate = Fate::InFlight { slot, deadline_ns, delivered_ns };
                        }
                    }
                }
            }
            Op::Disconnect { slot } => {
                self.consumers[slot] = None;
                for m in self.messages.values_mut() {
                    if matches!(m.fate, Fate::InFlight { slot: s, .. } if s == slot) {
                        m.fate = Fate::Pending;
                    }
                }
            }
            Op::Advance { ms } => {
                self.h.advance(Duration::from_millis(u64::from(ms)));
                self.engine().fire_timers();
                self.expire();
            }
            Op::Checkpoint => {
                self.engine().checkpoint().unwrap();
                self.finishes_become_durable();
            }
            Op::Crash => {
                self.drop_consumers();
                let engine = self.engine.take().unwrap();
                if self.power_loss {
                    self.h.crash(engine);
                } else {
                    // A process kill: written data stays, unflushed metadata is lost.
                    self.h.storage.crash_with(|_, ops| CrashKeep { ops: ops.len(), torn_bytes: 0 });
                    self.h.meta.crash();
                    engine.halt();
                }
                self.crashed = true;
                for m in self.messages.values_mut() {
                    if m.fate == Fate::FinishedVolatile {
                        m.fate = Fate::MayReturn;
                    }
                    // A crash may forget a REQ delay, never a DPUB time.
                    m.not_before_min_ns = m.dpub_ns;
                }
                self.engine = Some(self.h.open());
            }
            Op::Reopen => {
                self.drop_consumers();
                self.engine.take().unwrap().close().unwrap();
                self.finishes_become_durable();
                self.engine = Some(self.h.open());
            }
        }
        Ok(())
    }

    fn finishes_become_durable(&mut self) {
        for m in self.messages.values_mut() {
            if m.fate == Fate::FinishedVolatile {
                m.fate = Fate::FinishedDurable;
            }
        }
    }

    /// Delivers and finishes everything left, far in the future; checks nothing was lost.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        self.drop_consumers();
        self.h.advance(Duration::from_secs(3 * 3600));
        self.engine().fire_timers();
        let channel = self.engine().topic("t").unwrap().channel("c").unwrap();
        let consumer = channel.subscribe(None).unwrap();
        consumer.set_ready(2500);
        while let Some(delivery) = consumer.next_message().unwrap() {
            let body: u64 = std::str::from_utf8(&delivery.body).unwrap().parse().unwrap();
            let m = self.messages.get_mut(&body).unwrap();
            prop_assert!(
                matches!(m.fate, Fate::Pending | Fate::MayReturn),
                "drain delivered {} in state {:?}",
                body,
                m.fate
            );
            m.fate = Fate::FinishedVolatile;
            consumer.finish(&delivery.id).unwrap();
        }
        let lost: Vec<_> =
            self.messages.iter().filter(|(_, m)| m.fate == Fate::Pending).map(|(b, _)| b).collect();
        prop_assert!(
            lost.is_empty(),
            "acknowledged, unfinished, never delivered again: {:?}",
            lost
        );
        Ok(())
    }
}

fn run(ops: &[Op], power_loss: bool) -> Result<(), TestCaseError> {
    let sync = if power_loss {
        SyncPolicy::Always
    } else {
        SyncPolicy::Every { records: 1_000_000, interval: Duration::from_secs(3600) }
    };
    let config = EngineConfig {
        mem_queue_size: 0,
        log: LogConfig { sync, max_bytes_per_file: 32 + 8 * 40, ..LogConfig::default() },
        ..EngineConfig::default()
    };
    let h = Harness::with_config(config);
    let engine = h.open();
    engine.topic("t").unwrap().channel("c").unwrap();
    let mut world = World {
        h,
        engine: Some(engine),
        consumers: [None, None],
        messages: BTreeMap::new(),
        next_body: 0,
        crashed: false,
        power_loss,
    };
    for op in ops {
        world.step(op)?;
    }
    world.drain()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Power loss with fsync on every publish: nothing acknowledged may be lost.
    #[test]
    fn channel_semantics_hold_across_power_loss(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops, true)?;
    }

    /// Process kills with lazy fsync: written data survives, unflushed checkpoints do not.
    #[test]
    fn channel_semantics_hold_across_process_kills(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops, false)?;
    }
}
