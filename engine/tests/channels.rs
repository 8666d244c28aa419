//! NSQ's topic and channel semantics on the engine, with time moved by the test: each test names
//! the behaviour it proves.

// A failed unwrap in a test is a failed assertion; the lint guards library code against input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::time::Duration;

use common::{Harness, consumer, publish, take_all, text, texts};
use engine::clock::Clock;
use engine::message_id::message_id;
use engine::{EngineError, MessageError};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn names_are_validated_as_nsq_does() {
    // Goal: topic and channel names follow NSQ's rule (charset, 1..=64 bytes with the suffix).
    // Method: try names just inside and just outside the rule.
    let h = Harness::new();
    let engine = h.open();
    for bad in ["", "has space", "a:b", "a/b", &"x".repeat(65), "x#ephemeralx", "#ephemeral"] {
        assert!(matches!(engine.topic(bad), Err(EngineError::InvalidTopicName(_))), "{bad:?}");
    }
    let longest = "x".repeat(54) + "#ephemeral";
    assert_eq!(longest.len(), 64);
    engine.topic(&longest).unwrap();
    let topic = engine.topic("a.b_c-D9").unwrap();
    assert!(matches!(topic.channel("bad!"), Err(EngineError::InvalidChannelName(_))));
    topic.channel(&"c".repeat(64)).unwrap();
}

#[test]
fn a_topic_without_channels_keeps_its_messages_for_the_first_channel_only() {
    // Goal: NSQ's rule: the first channel gets the backlog, later channels start at the end.
    // Method: publish before any channel, add two channels at different times, read both.
    let h = Harness::new();
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    publish(&topic, &["a", "b"]);
    let first = topic.channel("first").unwrap();
    publish(&topic, &["c"]);
    let second = topic.channel("second").unwrap();
    publish(&topic, &["d"]);
    assert_eq!(texts(&take_all(&consumer(&first, 10))), ["a", "b", "c", "d"]);
    assert_eq!(texts(&take_all(&consumer(&second, 10))), ["d"]);
    // With every channel gone, the topic keeps what arrives for the next first channel.
    topic.delete_channel("first").unwrap();
    topic.delete_channel("second").unwrap();
    publish(&topic, &["e"]);
    let third = topic.channel("third").unwrap();
    assert_eq!(texts(&take_all(&consumer(&third, 10))), ["e"]);
}

#[test]
fn rdy_is_a_window_of_messages_in_flight() {
    // Goal: RDY bounds in-flight messages (NSQ: not a decrementing credit); RDY 0 stops.
    // Method: with RDY 2, take until refused, FIN one, take again; then set RDY 0.
    let h = Harness::new();
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    let channel = topic.channel("c").unwrap();
    publish(&topic, &["1", "2", "3", "4"]);
    let c = consumer(&channel, 2);
    let got = take_all(&c);
    assert_eq!(texts(&got), ["1", "2"]);
    assert_eq!(c.in_flight(), 2);
    assert!(!c.is_ready());
    c.finish(&got[0].id).unwrap();
    assert!(c.is_ready());
    assert_eq!(texts(&take_all(&c)), ["3"]);
    assert_eq!(c.in_flight(), 2);
    c.set_ready(0);
    c.finish(&got[1].id).unwrap();
    assert!(c.next_message().unwrap().is_none(), "RDY 0 with one in flight");
    let stats = channel.stats();
    let in_flight: Vec<_> = stats.consumers.iter().map(|s| s.in_flight_count).collect();
    assert_eq!(in_flight, [1]);
    c.set_ready(2);
    assert_eq!(text(&c.next_message().unwrap().unwrap()), "4");
}

#[test]
fn a_single_consumer_sees_the_log_in_order() {
    // Goal: per-channel FIFO for one consumer with RDY 1. Method: publish 100 messages in
    // batches, consume one at a time with FIN, compare the order.
    let h = Harness::new();
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    let channel = topic.channel("c").unwrap();
    let bodies: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    for chunk in bodies.chunks(7) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        publish(&topic, &chunk);
    }
    let c = consumer(&channel, 1);
    let mut seen = Vec::new();
    while let Some(delivery) = c.next_message().unwrap() {
        assert_eq!(delivery.id, message_id(delivery.offset), "IDs are the offsets in hex");
        assert_eq!(delivery.attempts, 1);
        c.finish(&delivery.id).unwrap();
        seen.push(text(&delivery));
    }
    assert_eq!(seen, bodies);
}

#[test]
fn fin_req_and_touch_check_that_the_message_is_in_flight_and_owned() {
    // Goal: NSQ's non-fatal outcomes: not in flight, not owned. Method: FIN, REQ and TOUCH with
    // a foreign consumer, an unknown ID, a malformed ID and a finished message.
    let h = Harness::new();
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    let channel = topic.channel("c").unwrap();
    publish(&topic, &["x"]);
    let owner = consumer(&channel, 1);
    let other = consumer(&channel, 1);
    let delivery = owner.next_message().unwrap().unwrap();
    assert_eq!(other.finish(&delivery.id), Err(MessageError::NotOwner));
    assert_eq!(other.requeue(&delivery.id, SECOND), Err(MessageError::NotOwner));
    assert_eq!(other.touch(&delivery.id), Err(MessageError::NotOwner));
    assert_eq!(owner.finish(&message_id(99)), Err(MessageError::NotInFlight));
    assert_eq!(owner.finish(b"not-hex-16-bytes"), Err(MessageError::NotInFlight));
    owner.finish(&delivery.id).unwrap();
    assert_eq!(owner.finish(&delivery.id), Err(MessageError::NotInFlight));
    assert_eq!(owner.touch(&delivery.id), Err(MessageError::NotInFlight));
}

#[test]
fn req_without_delay_redelivers_before_new_messages_with_attempts_counted() {
    // Goal: REQ 0 makes the message due at once, ahead of unread ones; attempts grow.
    // Method: take one, REQ it, take again.
    let h = Harness::new();
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    let channel = topic.channel("c").unwrap();
    publish(&topic, &["a", "b"]);
    let c = consumer(&channel, 1);
    let first = c.next_message().unwrap().unwrap();
    c.requeue(&first.id, Duration::ZERO).unwrap();
    let again = c.next_message().unwrap().unwrap();
    assert_eq!((text(&again), again.attempts), ("a".to_owned(), 2));
    let stats = channel.stats();
    assert_eq!(stats.requeue_count, 1);
    assert_eq!(stats.consumers[0].requeue_count, 1);
}

#[test]
fn req_with_delay_defers_until_due_and_is_clamped_to_max_req_timeout() {
    // Goal: a deferred message is not delivered before its time, is at its time, and a delay
    // above max-req-timeout is clamped. Method: REQ with a delay, move the clock around it.
    let mut config = Harness::new().config;
    config.max_req_timeout = Duration::from_secs(10);
    let h = Harness::with_config(config);
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    let channel = topic.channel("c").unwrap();
    publish(&topic, &["a"]);
    let c = consumer(&channel, 5);
    let delivery = c.next_message().unwrap().unwrap();
    let requeued_at = h.clock.now_ns();
    c.requeue(&delivery.id, Duration::from_secs(3600)).unwrap();
    assert_eq!(channel.stats().deferred_count, 1);
    assert_eq!(engine.next_timer_ns(), Some(requeued_at + 10_000_000_000), "clamped to 10 s");
    h.advance(Duration::from_secs(9));
    engine.fire_timers();
    assert!(c.next_message().unwrap().is_none());
    h.advance(SECOND);
    engine.fire_timers();
    let again = c.next_message().unwrap().unwrap();
    assert_eq!((text(&again), again.attempts), ("a".to_owned(), 2));
    assert_eq!(channel.stats().deferred_count, 0);
}

#[test]
fn an_unanswered_message_times_out_on_time_and_is_redelivered() {
    // Goal: the in-flight deadline is msg-timeout, fired by the timer exactly then, counted,
    // and the consumer's in-flight count drops. Method: take a message, move to just before
    // and at the deadline.
    let h = Harness::new();
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    let channel = topic.channel("c").unwrap();
    publish(&topic, &["a"]);
    let mut c = consumer(&channel, 1);
    let start = h.clock.now_ns();
    c.next_message().unwrap().unwrap();
    assert_eq!(engine.next_timer_ns(), Some(start + 60_000_000_000));
    c.take_changed();
    h.advance(Duration::from_secs(60) - Duration::from_nanos(1));
    engine.fire_timers();
    assert_eq!(c.in_flight(), 1);
    assert!(!c.take_changed(), "no wake-up before the deadline");
    h.advance(Duration::from_nanos(1));
    engine.fire_timers();
    assert!(c.take_changed(), "the timeout wakes consumers");
    assert_eq!(c.in_flight(), 0);
    let stats = channel.stats();
    assert_eq!((stats.timeout_count, stats.consumers[0].timeout_count), (1, 1));
    assert_eq!(c.next_message().unwrap().unwrap().attempts, 2);
}

#[test]
fn touch_extends_the_deadline_up_to_max_msg_timeout() {
    // Goal: TOUCH moves the deadline to now + timeout, capped at delivery + max-msg-timeout.
    // Method: max 90 s, timeout 60 s; touch at 50 s (deadline 110 s → capped to 90 s).
    let mut config = Harness::new().config;
    config.max_msg_timeout = Duration::from_secs(90);
    let h = Harness::with_config(config);
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    let channel = topic.channel("c").unwrap();
    publish(&topic, &["a"]);
    let c = consumer(&channel, 1);
    let start = h.clock.now_ns();
    let delivery = c.next_message().unwrap().unwrap();
    h.advance(Duration::from_secs(20));
    c.touch(&delivery.id).unwrap();
    h.advance(Duration::from_secs(59));
    engine.fire_timers();
    assert_eq!(c.in_flight(), 1, "touched at 20 s: due at 80 s, now 79 s");
    c.touch(&delivery.id).unwrap();
    h.advance(Duration::from_secs(10));
    engine.fire_timers();
    assert_eq!(c.in_flight(), 1, "touched at 79 s: due at 139 s, capped at 90 s; now 89 s");
    h.advance(SECOND);
    engine.fire_timers();
    assert_eq!(c.in_flight(), 0, "timed out at 90 s");
    assert_eq!(h.clock.now_ns(), start + 90_000_000_000);
}

#[test]
fn a_consumer_may_set_its_own_message_timeout_within_bounds() {
    // Goal: IDENTIFY's msg_timeout applies per consumer and is bounded to 1 s..=max.
    // Method: subscribe with 5 s and with out-of-range values.
    let h = Harness::new();
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    let channel = topic.channel("c").unwrap();
    assert!(matches!(
        channel.subscribe(Some(Duration::from_millis(999))),
        Err(EngineError::InvalidMsgTimeout { .. })
    ));
    assert!(channel.subscribe(Some(Duration::from_secs(16 * 60))).is_err());
    let c = channel.subscribe(Some(Duration::from_secs(5))).unwrap();
    c.set_ready(1);
    publish(&topic, &["a"]);
    let start = h.clock.now_ns();
    c.next_message().unwrap().unwrap();
    assert_eq!(engine.next_timer_ns(), Some(start + 5_000_000_000));
}

#[test]
fn a_departing_consumer_hands_its_messages_back_at_once() {
    // Goal: unlike NSQ, a disconnect requeues in-flight messages immediately, not at timeout.
    // Method: one consumer takes two, goes away; another gets both without the clock moving.
    let h = Harness::new();
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    let channel = topic.channel("c").unwrap();
    publish(&topic, &["a", "b", "c"]);
    let leaving = consumer(&channel, 2);
    assert_eq!(take_all(&leaving).len(), 2);
    let mut staying = consumer(&channel, 10);
    staying.take_changed();
    drop(leaving);
    assert!(staying.take_changed());
    let got = take_all(&staying);
    assert_eq!(texts(&got), ["a", "b", "c"]);
    assert_eq!(got.iter().map(|d| d.attempts).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(channel.stats().client_count, 1);
}

#[test]
fn dpub_is_delivered_no_earlier_than_its_time_and_long_defers_are_refused() {
    // Goal: DPUB holds the message until its time; defer above max-req-timeout is refused.
    // Method: DPUB 30 s between two PUBs; read at 0 and 30 s.
    let h = Harness::new();
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    let channel = topic.channel("c").unwrap();
    publish(&topic, &["now-1"]);
    topic.publish(&[b"later"], Duration::from_secs(30)).unwrap();
    publish(&topic, &["now-2"]);
    let c = consumer(&channel, 10);
    assert_eq!(texts(&take_all(&c)), ["now-1", "now-2"]);
    assert_eq!(channel.stats().deferred_count, 1);
    h.advance(Duration::from_secs(30));
    engine.fire_timers();
    let got = take_all(&c);
    assert_eq!((texts(&got), got[0].attempts), (vec!["later".to_owned()], 1));
    let too_long = topic.publish(&[b"x"], Duration::from_secs(3601));
    assert!(matches!(too_long, Err(EngineError::InvalidDefer { .. })));
    topic.publish(&[b"x"], Duration::from_secs(3600)).unwrap();
}

#[test]
fn a_paused_channel_delivers_nothing_and_stays_paused_after_reopen() {
    // Goal: channel pause stops delivery, unpause resumes and wakes, both persist.
    // Method: pause, try, reopen, check, unpause.
    let h = Harness::new();
    {
        let engine = h.open();
        let topic = engine.topic("t").unwrap();
        let channel = topic.channel("c").unwrap();
        publish(&topic, &["a"]);
        channel.pause().unwrap();
        let c = consumer(&channel, 1);
        assert!(c.next_message().unwrap().is_none());
        assert!(channel.stats().paused);
    }
    let engine = h.open();
    let channel = engine.get_topic("t").unwrap().get_channel("c").unwrap();
    assert!(channel.is_paused());
    let mut c = consumer(&channel, 1);
    c.take_changed();
    channel.unpause().unwrap();
    assert!(c.take_changed());
    assert_eq!(text(&c.next_message().unwrap().unwrap()), "a");
}

#[test]
fn a_paused_topic_holds_new_messages_at_the_topic_and_empty_drops_them() {
    // Goal: topic pause stops handing new messages to channels (depth counted at the topic);
    // topic empty drops those; unpause resumes. Method: publish around a pause, read, empty.
    let h = Harness::new();
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    let channel = topic.channel("c").unwrap();
    publish(&topic, &["before"]);
    topic.pause().unwrap();
    publish(&topic, &["during-1", "during-2"]);
    let c = consumer(&channel, 10);
    assert_eq!(texts(&take_all(&c)), ["before"]);
    assert_eq!(topic.stats().depth, 2);
    topic.empty().unwrap();
    assert_eq!(topic.stats().depth, 0);
    publish(&topic, &["after-empty"]);
    topic.unpause().unwrap();
    assert_eq!(texts(&take_all(&c)), ["after-empty"]);
    assert!(!topic.stats().paused);
}

#[test]
fn emptying_a_channel_drops_its_backlog_in_flight_and_deferred_messages() {
    // Goal: NSQ's /channel/empty: everything of the channel goes, consumers stay.
    // Method: one message in flight, one deferred, two unread; empty; check stats and FIN.
    let h = Harness::new();
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    let channel = topic.channel("c").unwrap();
    publish(&topic, &["a", "b", "c", "d"]);
    let c = consumer(&channel, 2);
    let got = take_all(&c);
    c.requeue(&got[1].id, Duration::from_secs(60)).unwrap();
    channel.empty().unwrap();
    let stats = channel.stats();
    assert_eq!((stats.depth, stats.in_flight_count, stats.deferred_count), (0, 0, 0));
    assert_eq!(c.in_flight(), 0);
    assert_eq!(c.finish(&got[0].id), Err(MessageError::NotInFlight));
    h.advance(Duration::from_secs(61));
    engine.fire_timers();
    assert!(c.next_message().unwrap().is_none(), "the deferred message is gone too");
    publish(&topic, &["e"]);
    assert_eq!(texts(&take_all(&c)), ["e"]);
}

#[test]
fn deleting_a_channel_or_topic_removes_it_for_good() {
    // Goal: delete removes the channel (its consumers see it), its progress, and for a topic its
    // files. Method: delete, reopen, look.
    let h = Harness::new();
    {
        let engine = h.open();
        let topic = engine.topic("t").unwrap();
        let channel = topic.channel("c").unwrap();
        topic.channel("keep").unwrap();
        let c = consumer(&channel, 1);
        publish(&topic, &["a"]);
        topic.delete_channel("c").unwrap();
        assert!(channel.is_deleted());
        assert!(matches!(c.next_message(), Err(EngineError::Exiting(_))));
        assert!(matches!(topic.delete_channel("c"), Err(EngineError::ChannelNotFound { .. })));
        let gone = engine.topic("gone").unwrap();
        publish(&gone, &["x"]);
        engine.delete_topic("gone").unwrap();
        assert!(gone.publish(&[b"y"], Duration::ZERO).is_err());
        assert!(matches!(engine.delete_topic("gone"), Err(EngineError::TopicNotFound(_))));
    }
    assert!(h.storage.file_paths().iter().all(|p| !p.starts_with("/data/topics/gone")));
    let engine = h.open();
    assert!(engine.get_topic("gone").is_none());
    let topic = engine.get_topic("t").unwrap();
    let names: Vec<_> = topic.channels().iter().map(|c| c.name().to_owned()).collect();
    assert_eq!(names, ["keep"]);
}

#[test]
fn ephemeral_topics_and_channels_never_touch_the_disk_and_vanish_as_in_nsq() {
    // Goal: #ephemeral names are kept in memory only; a channel goes with its last consumer and
    // a topic with its last channel. Method: use both, check storage and meta, drop consumers.
    let h = Harness::new();
    let engine = h.open();
    let topic = engine.topic("e#ephemeral").unwrap();
    let channel = topic.channel("c#ephemeral").unwrap();
    publish(&topic, &["a"]);
    let c = consumer(&channel, 1);
    assert_eq!(text(&c.next_message().unwrap().unwrap()), "a");
    let durable = engine.topic("d").unwrap();
    let eph_channel = durable.channel("c#ephemeral").unwrap();
    engine.checkpoint().unwrap();
    assert!(h.storage.file_paths().iter().all(|p| !p.to_string_lossy().contains("ephemeral")));
    assert_eq!(h.meta.len("topics"), 1, "only the durable topic");
    assert_eq!(h.meta.len("channels"), 0, "ephemeral channels are never checkpointed");
    drop(c);
    assert!(channel.is_deleted());
    assert!(engine.get_topic("e#ephemeral").is_none(), "went with its last channel");
    let eph_consumer = consumer(&eph_channel, 1);
    drop(eph_consumer);
    assert!(durable.get_channel("c#ephemeral").is_none());
    assert!(engine.get_topic("d").is_some(), "a durable topic stays");
}

#[test]
fn an_ephemeral_topic_drops_messages_beyond_its_memory_bound() {
    // Goal: ephemeral topics hold at most mem-queue-size undelivered messages (NSQ drops the
    // overflow). Method: bound 3, publish 5 with no channel, count.
    let mut config = Harness::new().config;
    config.mem_queue_size = 3;
    let h = Harness::with_config(config);
    let engine = h.open();
    let topic = engine.topic("e#ephemeral").unwrap();
    for i in 0..5 {
        publish(&topic, &[&format!("{i}")]);
    }
    let stats = topic.stats();
    assert_eq!((stats.depth, stats.dropped_count), (3, 2));
    let channel = topic.channel("c").unwrap();
    assert_eq!(texts(&take_all(&consumer(&channel, 10))), ["0", "1", "2"]);
}

#[test]
fn stats_report_what_nsq_reports() {
    // Goal: depth, in-flight, deferred, message, requeue and timeout counts, clients and e2e
    // latency are reported. Method: drive a channel into each state and read the stats.
    let mut config = Harness::new().config;
    config.e2e_percentiles = vec![0.5, 0.99];
    let h = Harness::with_config(config);
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    let channel = topic.channel("c").unwrap();
    publish(&topic, &["a", "bb", "ccc", "dddd", "eeeee"]);
    let c = consumer(&channel, 3);
    let got = take_all(&c);
    h.advance(Duration::from_millis(250));
    c.finish(&got[0].id).unwrap();
    c.requeue(&got[1].id, Duration::from_secs(10)).unwrap();
    let t = topic.stats();
    assert_eq!((t.message_count, t.message_bytes, t.depth), (5, 15, 0));
    let s = &t.channels[0];
    assert_eq!(s.depth, 2, "unread only: in-flight and deferred excluded");
    assert_eq!((s.in_flight_count, s.deferred_count), (1, 1));
    assert_eq!((s.message_count, s.requeue_count, s.timeout_count, s.client_count), (5, 1, 0, 1));
    let consumer_stats = s.consumers[0];
    assert_eq!((consumer_stats.message_count, consumer_stats.finish_count), (3, 1));
    assert_eq!(consumer_stats.in_flight_count, 1);
    let e2e = s.e2e_processing_latency.as_ref().unwrap();
    assert_eq!(e2e.count, 1);
    let median_ns = e2e.percentiles[0].1;
    assert!((245_000_000..=255_000_000).contains(&median_ns), "{median_ns}");
}

#[test]
fn consumers_are_woken_when_messages_arrive_or_come_back() {
    // Goal: the wake-up signal fires on publish, REQ 0 and unpause, so a server never polls.
    // Method: clear the signal, act, check it.
    let h = Harness::new();
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    let channel = topic.channel("c").unwrap();
    let mut c = consumer(&channel, 1);
    c.take_changed();
    publish(&topic, &["a"]);
    assert!(c.take_changed());
    let delivery = c.next_message().unwrap().unwrap();
    assert!(!c.take_changed());
    c.requeue(&delivery.id, Duration::ZERO).unwrap();
    assert!(c.take_changed());
}

#[test]
fn the_observer_hears_of_every_topic_and_channel_that_comes_and_goes() {
    // Goal: nsqd mirrors the set of topics and channels to nsqlookupd from these notices, so
    // each creation and deletion is told once, the implicit ones (an ephemeral channel's last
    // consumer leaving, then its ephemeral topic) included. Method: record every change.
    use engine::changes::Change;
    use std::sync::{Arc, Mutex};
    let h = Harness::new();
    let engine = h.open();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    engine.observe(Arc::new(move |change: &Change| record.lock().unwrap().push(change.clone())));
    let orders = engine.topic("orders").unwrap();
    orders.channel("billing").unwrap();
    orders.channel("billing").unwrap();
    engine.topic("orders").unwrap();
    let live = engine.topic("live#ephemeral").unwrap();
    let tail = live.channel("tail#ephemeral").unwrap();
    drop(tail.subscribe(None).unwrap());
    orders.delete_channel("billing").unwrap();
    engine.delete_topic("orders").unwrap();
    let created = |topic: &str, channel: &str| Change::ChannelCreated {
        topic: topic.into(),
        channel: channel.into(),
    };
    let deleted = |topic: &str, channel: &str| Change::ChannelDeleted {
        topic: topic.into(),
        channel: channel.into(),
    };
    let expected = [
        Change::TopicCreated("orders".into()),
        created("orders", "billing"),
        Change::TopicCreated("live#ephemeral".into()),
        created("live#ephemeral", "tail#ephemeral"),
        deleted("live#ephemeral", "tail#ephemeral"),
        Change::TopicDeleted("live#ephemeral".into()),
        deleted("orders", "billing"),
        Change::TopicDeleted("orders".into()),
    ];
    assert_eq!(*seen.lock().unwrap(), expected);
}

#[test]
fn channels_created_together_on_a_new_topic_all_get_its_backlog() {
    // Goal: channels nsqd pre-creates from nsqlookupd each see what was published before
    // them, while a channel added to a topic that has one starts at the end, as before.
    // Method: publish, create two channels in one call, then a third alone; read all three.
    let h = Harness::new();
    let engine = h.open();
    let topic = engine.topic("t").unwrap();
    publish(&topic, &["a", "b"]);
    let both = topic.create_channels(&["x", "y", "x"]).unwrap();
    assert_eq!(both.len(), 3);
    assert!(std::sync::Arc::ptr_eq(&both[0], &both[2]));
    publish(&topic, &["c"]);
    let late = topic.channel("z").unwrap();
    publish(&topic, &["d"]);
    for (channel, want) in [(&both[0], "abcd"), (&both[1], "abcd"), (&late, "d")] {
        let got: String = texts(&take_all(&consumer(channel, 10))).concat();
        assert_eq!(got, want, "{}", channel.name());
    }
    assert!(matches!(
        topic.create_channels(&["ok", "bad!"]),
        Err(EngineError::InvalidChannelName(_))
    ));
    assert!(topic.get_channel("ok").is_none(), "nothing is created when a name is bad");
}
