//! The ledger: what was sent, acknowledged, delivered and finished, and the checker that judges
//! every delivery against the durability contract (DESIGN.md §3.4, `--mem-queue-size=0`).
//!
//! # What counts
//!
//! Counts are kept per cycle (one nsqd lifetime, ended by SIGKILL; the final drain is a cycle of
//! its own). A *channel* is one of the consumer channels of the torture topic, all created
//! before the first publish.
//!
//! - **acked**: a message whose PUB, MPUB or DPUB nsqd answered `OK`, in the cycle of the `OK`.
//!   A message sent but never answered (the kill came first) or refused with an error frame is
//!   *unacked*: nsqd may deliver it or not, both are correct.
//! - **lost**: an acked message for which, at the end of the run (after the final drain), some
//!   channel never saw a FIN sent for it. Every acked message has to be delivered on every channel
//!   until a consumer FINs it there, whatever happened in between: in flight at a kill, REQ'd,
//!   deferred, held by a consumer that disconnected. Only an intact copy counts: a FIN sent for a
//!   corrupt copy finishes nothing here. A message missing on two channels counts once.
//!   Attributed to the cycle it was acked in.
//! - **corrupt**: a delivery whose body fails its own check (length, magic, CRC-32C; see
//!   [`crate::payload`]). Attributed to the cycle of the delivery.
//! - **unexpected**: a delivery whose body is intact but was never sent in this run: another
//!   run's id, a sequence number no producer used, or a body that differs from the one sent
//!   under that producer and sequence.
//! - **duplicate**: a delivery on a channel of a message for which a FIN was already sent on that
//!   channel. V2 has no acknowledgement of FIN, so a FIN that races a kill or a disconnect, or one
//!   that falls after the last checkpoint before a kill, may be lost; duplicates are counted, and
//!   are no failure. (A redelivery of a message that was delivered but not yet FINed on that
//!   channel, after a REQ, a disconnect or a kill, is a *redelivery*, counted apart: `again` in
//!   the table.)
//! - **early**: a delivery of a DPUB'd message before the deliver-after time in its body (the
//!   publisher's clock before sending plus the defer, so nsqd's own due time is never earlier).
//!   Reported, not a failure. REQ delays are not checked: a REQ has no acknowledgement either,
//!   so one that races a disconnect or a kill is lost and the message comes back at once, as it
//!   may after a crash that came before the channel's next checkpoint.
//!
//! A run fails when lost + corrupt + unexpected > 0.

use std::fmt::Write as _;

use serde::Serialize;

use crate::payload::{self, Corruption, Key, Payload};

/// Channels a ledger can follow (one bit each).
pub const MAX_CHANNELS: usize = 8;
const NOT_ACKED: u32 = u32::MAX;
/// Problem descriptions kept for the report, at most.
const SAMPLES_KEPT: usize = 40;

/// One message: 12 bytes, so that millions fit.
#[derive(Debug, Clone, Copy)]
struct Record {
    crc: u32,
    /// The cycle of the `OK`, or `NOT_ACKED`.
    acked_in: u32,
    sent: bool,
    /// Bit `c`: delivered on channel `c` at least once.
    delivered: u8,
    /// Bit `c`: a FIN was sent for it on channel `c`.
    finned: u8,
}

const UNSENT: Record = Record { crc: 0, acked_in: NOT_ACKED, sent: false, delivered: 0, finned: 0 };

/// Counts of one cycle. See the module docs for what each means.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CycleStats {
    /// 1-based; the final drain is the cycle after the last torture cycle.
    pub cycle: u32,
    /// When nsqd was SIGKILLed, in ms after it was listening (`None`: not killed).
    pub kill_after_ms: Option<u64>,
    /// Wall time of the whole cycle, start to reaping.
    pub duration_ms: u64,
    /// Messages in flight, summed over channels, in nsqd's stats read just before the kill.
    pub in_flight_at_kill: u64,
    /// Messages deferred (DPUB or REQ with a delay), likewise.
    pub deferred_at_kill: u64,
    /// Messages sent (each MPUB body counts).
    pub sent: u64,
    pub acked: u64,
    /// Publishes refused with an error frame.
    pub pub_errors: u64,
    /// Deliveries, all channels.
    pub delivered: u64,
    pub redelivered: u64,
    pub fin: u64,
    pub req: u64,
    pub touch: u64,
    /// Consumer connections dropped on purpose with messages in flight.
    pub disconnects: u64,
    /// Error frames on consumer connections (E_FIN_FAILED and such).
    pub consumer_errors: u64,
    pub lost: u64,
    pub corrupt: u64,
    pub unexpected: u64,
    pub duplicate: u64,
    pub early: u64,
}

impl CycleStats {
    /// Adds `other`'s counts (not its cycle, kill time).
    pub fn add(&mut self, other: &CycleStats) {
        self.duration_ms += other.duration_ms;
        self.in_flight_at_kill += other.in_flight_at_kill;
        self.deferred_at_kill += other.deferred_at_kill;
        self.sent += other.sent;
        self.acked += other.acked;
        self.pub_errors += other.pub_errors;
        self.delivered += other.delivered;
        self.redelivered += other.redelivered;
        self.fin += other.fin;
        self.req += other.req;
        self.touch += other.touch;
        self.disconnects += other.disconnects;
        self.consumer_errors += other.consumer_errors;
        self.lost += other.lost;
        self.corrupt += other.corrupt;
        self.unexpected += other.unexpected;
        self.duplicate += other.duplicate;
        self.early += other.early;
    }

    /// lost + corrupt + unexpected: what makes a run fail.
    pub fn failures(&self) -> u64 {
        self.lost + self.corrupt + self.unexpected
    }
}

/// Things consumers and publishers report that are only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Req,
    Touch,
    Disconnect,
    ConsumerError,
    PubError,
}

/// The checker's judgement of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The first delivery of the message on this channel.
    First(Key),
    /// Delivered on this channel before, never FINed there.
    Again(Key),
    /// Delivered after a FIN for it was sent on this channel.
    Duplicate(Key),
    Corrupt(Corruption),
    Unexpected(Payload),
}

impl Delivery {
    /// The message, when the body is one this run sent.
    pub fn key(&self) -> Option<Key> {
        match *self {
            Self::First(key) | Self::Again(key) | Self::Duplicate(key) => Some(key),
            Self::Corrupt(_) | Self::Unexpected(_) => None,
        }
    }
}

/// The result of a run: counts per cycle, and descriptions of the first problems.
#[derive(Debug, Clone, Serialize)]
pub struct Findings {
    pub cycles: Vec<CycleStats>,
    pub samples: Vec<String>,
}

/// Every message of a run and every cycle's counts.
#[derive(Debug)]
pub struct Ledger {
    run: u64,
    channels: usize,
    all_channels: u8,
    /// Per producer, indexed by sequence.
    producers: Vec<Vec<Record>>,
    cycles: Vec<CycleStats>,
    /// (acked message, channel) pairs without a FIN sent.
    outstanding: u64,
    samples: Vec<String>,
}

impl Ledger {
    /// A ledger for run id `run` with `channels` channels (1 to [`MAX_CHANNELS`]; more are cut to
    /// the maximum). It starts in cycle 1.
    pub fn new(run: u64, channels: usize) -> Self {
        let channels = channels.clamp(1, MAX_CHANNELS);
        Self {
            run,
            channels,
            all_channels: u8::try_from((1u16 << channels) - 1).unwrap_or(u8::MAX),
            producers: Vec::new(),
            cycles: vec![CycleStats { cycle: 1, ..CycleStats::default() }],
            outstanding: 0,
            samples: Vec::new(),
        }
    }

    pub fn run_id(&self) -> u64 {
        self.run
    }

    /// Starts the next cycle; returns its number.
    pub fn begin_cycle(&mut self) -> u32 {
        let cycle = self.current().cycle + 1;
        self.cycles.push(CycleStats { cycle, ..CycleStats::default() });
        cycle
    }

    /// The counts of the cycle under way.
    pub fn current(&mut self) -> &mut CycleStats {
        if self.cycles.is_empty() {
            self.cycles.push(CycleStats { cycle: 1, ..CycleStats::default() });
        }
        let last = self.cycles.len() - 1;
        &mut self.cycles[last]
    }

    /// The next unused sequence number of `producer`.
    pub fn next_seq(&self, producer: u16) -> u32 {
        self.producers
            .get(usize::from(producer))
            .map_or(0, |r| u32::try_from(r.len()).unwrap_or(u32::MAX))
    }

    /// (acked message, channel) pairs still waiting for a FIN: publishers hold back when it grows.
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }

    /// Records that the body of `key`, with CRC `crc`, is about to be sent.
    pub fn sent(&mut self, key: Key, crc: u32) {
        let producer = usize::from(key.producer);
        if self.producers.len() <= producer {
            self.producers.resize_with(producer + 1, Vec::new);
        }
        let records = &mut self.producers[producer];
        let Ok(seq) = usize::try_from(key.seq) else { return };
        if records.len() <= seq {
            records.resize(seq + 1, UNSENT);
        }
        records[seq] = Record { crc, sent: true, ..UNSENT };
        self.current().sent += 1;
    }

    fn record(&mut self, key: Key) -> Option<&mut Record> {
        self.producers
            .get_mut(usize::from(key.producer))?
            .get_mut(usize::try_from(key.seq).ok()?)
            .filter(|r| r.sent)
    }

    /// Records nsqd's `OK` for `key`.
    pub fn acked(&mut self, key: Key) {
        let cycle = self.current().cycle;
        let all = self.all_channels;
        let Some(record) = self.record(key) else { return };
        if record.acked_in != NOT_ACKED {
            return;
        }
        record.acked_in = cycle;
        let unfinished = u64::from((all & !record.finned).count_ones());
        self.outstanding += unfinished;
        self.current().acked += 1;
    }

    pub fn count(&mut self, event: Event) {
        let current = self.current();
        match event {
            Event::Req => current.req += 1,
            Event::Touch => current.touch += 1,
            Event::Disconnect => current.disconnects += 1,
            Event::ConsumerError => current.consumer_errors += 1,
            Event::PubError => current.pub_errors += 1,
        }
    }

    /// Keeps a description of a problem for the report (the first few only).
    pub fn note(&mut self, text: String) {
        if self.samples.len() < SAMPLES_KEPT {
            self.samples.push(text);
        }
    }

    /// Judges a delivery of `body` on `channel` at unix time `now_ms`, and counts it.
    pub fn delivered(&mut self, channel: usize, body: &[u8], now_ms: u64) -> Delivery {
        let bit = 1u8 << channel.min(MAX_CHANNELS - 1);
        let run = self.run;
        let cycle = self.current().cycle;
        self.current().delivered += 1;
        let payload = match payload::decode(body) {
            Ok(payload) => payload,
            Err(corruption) => {
                self.current().corrupt += 1;
                let head: String = body.iter().take(48).fold(String::new(), |mut s, b| {
                    let _ = write!(s, "{b:02x}");
                    s
                });
                self.note(format!(
                    "cycle {cycle}: corrupt body on channel {channel} ({corruption}), {} bytes: {head}…",
                    body.len()
                ));
                return Delivery::Corrupt(corruption);
            }
        };
        let verdict = match self.record(payload.key) {
            Some(record) if payload.run == run && record.crc == payload.crc => {
                let verdict = if record.finned & bit != 0 {
                    Delivery::Duplicate(payload.key)
                } else if record.delivered & bit != 0 {
                    Delivery::Again(payload.key)
                } else {
                    Delivery::First(payload.key)
                };
                record.delivered |= bit;
                verdict
            }
            _ => Delivery::Unexpected(payload),
        };
        match verdict {
            Delivery::Unexpected(p) => {
                self.current().unexpected += 1;
                self.note(format!(
                    "cycle {cycle}: unexpected body on channel {channel}: run {:016x} (ours {run:016x}), {}, crc {:08x}",
                    p.run, p.key, p.crc
                ));
            }
            Delivery::Duplicate(_) => self.current().duplicate += 1,
            Delivery::Again(_) => self.current().redelivered += 1,
            Delivery::First(_) | Delivery::Corrupt(_) => {}
        }
        if payload.deliver_after_ms > now_ms && verdict.key().is_some() {
            self.current().early += 1;
            self.note(format!(
                "cycle {cycle}: {} delivered on channel {channel} {} ms before its deliver-after",
                payload.key,
                payload.deliver_after_ms - now_ms
            ));
        }
        verdict
    }

    /// Records a FIN sent on `channel`, for `key` when the body was one of ours.
    pub fn fin_sent(&mut self, channel: usize, key: Option<Key>) {
        self.current().fin += 1;
        let bit = 1u8 << channel.min(MAX_CHANNELS - 1);
        let Some(record) = key.and_then(|k| self.record(k)) else { return };
        if record.finned & bit == 0 {
            record.finned |= bit;
            if record.acked_in != NOT_ACKED {
                self.outstanding = self.outstanding.saturating_sub(1);
            }
        }
    }

    /// Decides what was lost (call after the final drain) and hands back the counts.
    pub fn finish(mut self) -> Findings {
        let mut lost_notes = Vec::new();
        for (producer, records) in self.producers.iter().enumerate() {
            for (seq, record) in records.iter().enumerate() {
                if record.acked_in == NOT_ACKED
                    || record.finned & self.all_channels == self.all_channels
                {
                    continue;
                }
                let at = self.cycles.iter().position(|c| c.cycle == record.acked_in);
                if let Some(at) = at {
                    self.cycles[at].lost += 1;
                }
                if lost_notes.len() < SAMPLES_KEPT {
                    let missing: Vec<String> = (0..self.channels)
                        .filter(|c| record.finned & (1 << c) == 0)
                        .map(|c| {
                            let seen = record.delivered & (1 << c) != 0;
                            format!(
                                "channel {c} ({})",
                                if seen { "delivered, never FINed" } else { "never delivered" }
                            )
                        })
                        .collect();
                    lost_notes.push(format!(
                        "lost: p{producer}#{seq}, acked in cycle {}, on {}",
                        record.acked_in,
                        missing.join(", ")
                    ));
                }
            }
        }
        let mut samples = lost_notes;
        samples.append(&mut self.samples);
        Findings { cycles: self.cycles, samples }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::payload::encode;

    const RUN: u64 = 0xfeed;

    fn send(ledger: &mut Ledger, producer: u16, defer_until: u64) -> (Key, Vec<u8>) {
        let key = Key { producer, seq: ledger.next_seq(producer) };
        let (body, crc) = encode(RUN, key, defer_until, 16);
        ledger.sent(key, crc);
        (key, body)
    }

    fn totals(findings: &Findings) -> CycleStats {
        let mut total = CycleStats::default();
        findings.cycles.iter().for_each(|c| total.add(c));
        total
    }

    #[test]
    fn a_clean_history_has_nothing_to_report() {
        let mut ledger = Ledger::new(RUN, 2);
        let (key, body) = send(&mut ledger, 0, 0);
        ledger.acked(key);
        assert_eq!(ledger.outstanding(), 2);
        for channel in 0..2 {
            assert_eq!(ledger.delivered(channel, &body, 1), Delivery::First(key));
            ledger.fin_sent(channel, Some(key));
        }
        assert_eq!(ledger.outstanding(), 0);
        let total = totals(&ledger.finish());
        assert_eq!((total.acked, total.delivered, total.fin), (1, 2, 2));
        assert_eq!(total.failures() + total.duplicate + total.early + total.redelivered, 0);
    }

    #[test]
    fn an_acked_message_never_finished_on_one_channel_is_lost_in_its_cycle() {
        let mut ledger = Ledger::new(RUN, 2);
        let (_, _) = send(&mut ledger, 0, 0); // sent, never acked: not lost
        ledger.begin_cycle();
        let (key, body) = send(&mut ledger, 0, 0);
        ledger.acked(key);
        ledger.delivered(0, &body, 1);
        ledger.fin_sent(0, Some(key));
        // Delivered on channel 1 but REQ'd, then never again.
        ledger.delivered(1, &body, 1);
        ledger.begin_cycle();
        let (other, _) = send(&mut ledger, 1, 0);
        ledger.acked(other); // never delivered anywhere
        assert_eq!(ledger.outstanding(), 3);
        let findings = ledger.finish();
        let lost: Vec<u64> = findings.cycles.iter().map(|c| c.lost).collect();
        assert_eq!(lost, [0, 1, 1]);
        assert!(findings.samples[0].contains("p0#1"), "{:?}", findings.samples);
        assert!(findings.samples[0].contains("channel 1 (delivered, never FINed)"));
        assert!(findings.samples[1].contains("channel 0 (never delivered)"));
    }

    #[test]
    fn a_damaged_body_is_corrupt() {
        let mut ledger = Ledger::new(RUN, 1);
        let (key, mut body) = send(&mut ledger, 0, 0);
        ledger.acked(key);
        body[payload::HEADER_LEN + 3] ^= 0x10;
        assert!(matches!(
            ledger.delivered(0, &body, 1),
            Delivery::Corrupt(Corruption::BadCrc { .. })
        ));
        assert!(matches!(ledger.delivered(0, &body[..10], 1), Delivery::Corrupt(_)));
        assert!(matches!(ledger.delivered(0, b"", 1), Delivery::Corrupt(_)));
        let findings = ledger.finish();
        let total = totals(&findings);
        assert_eq!(total.corrupt, 3);
        assert_eq!(total.lost, 1, "a corrupt copy does not count as delivered");
        assert!(findings.samples.iter().any(|s| s.contains("corrupt body")));
    }

    #[test]
    fn an_intact_body_never_sent_is_unexpected() {
        let mut ledger = Ledger::new(RUN, 1);
        let (key, _) = send(&mut ledger, 0, 0);
        ledger.acked(key);
        // A sequence nobody sent, a producer nobody was, another run, another body for a key.
        let never = [
            encode(RUN, Key { producer: 0, seq: 5 }, 0, 3).0,
            encode(RUN, Key { producer: 9, seq: 0 }, 0, 3).0,
            encode(RUN + 1, key, 0, 16).0,
            encode(RUN, key, 0, 17).0,
        ];
        for body in &never {
            assert!(matches!(ledger.delivered(0, body, 1), Delivery::Unexpected(_)), "{body:?}");
        }
        // A message the ledger has a slot for but that was never sent is unexpected too.
        let gap = encode(RUN, Key { producer: 0, seq: 3 }, 0, 3).0;
        let _ = send(&mut ledger, 0, 0);
        ledger.sent(Key { producer: 0, seq: 4 }, 0);
        assert!(matches!(ledger.delivered(0, &gap, 1), Delivery::Unexpected(_)));
        let total = totals(&ledger.finish());
        assert_eq!(total.unexpected, 5);
    }

    #[test]
    fn a_delivery_after_a_fin_is_a_duplicate_and_not_a_failure() {
        let mut ledger = Ledger::new(RUN, 2);
        let (key, body) = send(&mut ledger, 0, 0);
        ledger.acked(key);
        assert_eq!(ledger.delivered(0, &body, 1), Delivery::First(key));
        assert_eq!(ledger.delivered(0, &body, 1), Delivery::Again(key), "after a REQ");
        ledger.fin_sent(0, Some(key));
        ledger.begin_cycle();
        assert_eq!(ledger.delivered(0, &body, 1), Delivery::Duplicate(key), "the FIN was lost");
        ledger.fin_sent(0, Some(key));
        assert_eq!(ledger.delivered(1, &body, 1), Delivery::First(key), "channels are apart");
        ledger.fin_sent(1, Some(key));
        let findings = ledger.finish();
        assert_eq!(findings.cycles[1].duplicate, 1);
        let total = totals(&findings);
        assert_eq!((total.duplicate, total.redelivered, total.failures()), (1, 1, 0));
    }

    #[test]
    fn a_deferred_message_delivered_before_its_time_is_early() {
        let mut ledger = Ledger::new(RUN, 1);
        let (key, body) = send(&mut ledger, 0, 5_000);
        ledger.acked(key);
        ledger.delivered(0, &body, 4_999);
        ledger.delivered(0, &body, 5_000);
        ledger.fin_sent(0, Some(key));
        let total = totals(&ledger.finish());
        assert_eq!((total.early, total.failures()), (1, 0));
    }

    #[test]
    fn a_fin_before_the_ok_is_not_outstanding() {
        // The consumer may see a message before its publisher sees the OK.
        let mut ledger = Ledger::new(RUN, 2);
        let (key, body) = send(&mut ledger, 0, 0);
        ledger.delivered(0, &body, 1);
        ledger.fin_sent(0, Some(key));
        ledger.acked(key);
        assert_eq!(ledger.outstanding(), 1);
        ledger.delivered(1, &body, 1);
        ledger.fin_sent(1, Some(key));
        assert_eq!(ledger.outstanding(), 0);
        assert_eq!(totals(&ledger.finish()).failures(), 0);
    }
}
