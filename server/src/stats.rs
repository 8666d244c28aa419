//! `/stats`: nsqd's JSON shape field for field (nsqadmin and nsq_stat parse it), and its text
//! form. Built from the engine's counters and the client registry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::stats::{ChannelStats, ConsumerStats, LatencyQuantiles, TopicStats};
use protocol::compression::Compression;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::clients::Client;
use crate::nsqd::Nsqd;
use crate::options::{NSQ_VERSION, version_line};

#[derive(Debug, Serialize)]
pub(crate) struct StatsResponse {
    pub(crate) version: String,
    pub(crate) health: String,
    pub(crate) start_time: i64,
    pub(crate) topics: Option<Vec<TopicJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) memory: Option<MemoryJson>,
    pub(crate) producers: Option<Vec<ClientJson>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct TopicJson {
    pub(crate) topic_name: String,
    pub(crate) channels: Vec<ChannelJson>,
    pub(crate) depth: u64,
    pub(crate) backend_depth: u64,
    pub(crate) message_count: u64,
    pub(crate) message_bytes: u64,
    pub(crate) paused: bool,
    pub(crate) e2e_processing_latency: LatencyJson,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChannelJson {
    pub(crate) channel_name: String,
    pub(crate) depth: u64,
    pub(crate) backend_depth: u64,
    pub(crate) in_flight_count: u64,
    pub(crate) deferred_count: u64,
    pub(crate) message_count: u64,
    pub(crate) requeue_count: u64,
    pub(crate) timeout_count: u64,
    pub(crate) client_count: u64,
    pub(crate) clients: Option<Vec<ClientJson>>,
    pub(crate) paused: bool,
    pub(crate) e2e_processing_latency: LatencyJson,
}

/// nsqd's `quantile.Result`: `percentiles` is null when the measurement is off.
#[derive(Debug, Serialize)]
pub(crate) struct LatencyJson {
    pub(crate) count: u64,
    pub(crate) percentiles: Option<Vec<Map<String, Value>>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct PubCount {
    pub(crate) topic: String,
    pub(crate) count: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct ClientJson {
    pub(crate) client_id: String,
    pub(crate) hostname: String,
    pub(crate) version: String,
    pub(crate) remote_address: String,
    pub(crate) state: i32,
    pub(crate) ready_count: u64,
    pub(crate) in_flight_count: u64,
    pub(crate) message_count: u64,
    pub(crate) finish_count: u64,
    pub(crate) requeue_count: u64,
    pub(crate) connect_ts: i64,
    pub(crate) sample_rate: i32,
    pub(crate) deflate: bool,
    pub(crate) snappy: bool,
    pub(crate) user_agent: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) authed: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) auth_identity: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) auth_identity_url: String,
    pub(crate) topology_zone: String,
    pub(crate) topology_region: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) pub_counts: Vec<PubCount>,
    pub(crate) tls: bool,
    pub(crate) tls_cipher_suite: String,
    pub(crate) tls_version: String,
    pub(crate) tls_negotiated_protocol: String,
    pub(crate) tls_negotiated_protocol_is_mutual: bool,
}

/// nsqd reports Go's heap; this process has no garbage collector, so the heap figure is the
/// resident set and the collector figures are zero.
#[derive(Debug, Serialize)]
pub(crate) struct MemoryJson {
    pub(crate) heap_objects: u64,
    pub(crate) heap_idle_bytes: u64,
    pub(crate) heap_in_use_bytes: u64,
    pub(crate) heap_released_bytes: u64,
    pub(crate) gc_pause_usec_100: u64,
    pub(crate) gc_pause_usec_99: u64,
    pub(crate) gc_pause_usec_95: u64,
    pub(crate) next_gc_bytes: u64,
    pub(crate) gc_total_runs: u32,
}

/// Resident memory of this process, from `/proc/self/statm` (0 where that does not exist).
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn latency(quantiles: Option<&LatencyQuantiles>) -> LatencyJson {
    match quantiles {
        None => LatencyJson { count: 0, percentiles: None },
        Some(q) => LatencyJson {
            count: q.count,
            percentiles: Some(
                q.percentiles
                    .iter()
                    .map(|&(quantile, value)| {
                        let mut map = Map::new();
                        map.insert("quantile".into(), Value::from(quantile));
                        map.insert("value".into(), Value::from(value));
                        map
                    })
                    .collect(),
            ),
        },
    }
}

fn client_json(
    client: &Client,
    consumer: Option<&ConsumerStats>,
    topic_filter: &str,
) -> ClientJson {
    let meta = client.meta().clone();
    // nsqd shows one topic's count only (a `break` in its loop); we show them all, or the
    // filtered topic's.
    let pub_counts = meta
        .pub_counts
        .iter()
        .filter(|(topic, _)| topic_filter.is_empty() || topic.as_str() == topic_filter)
        .map(|(topic, &count)| PubCount { topic: topic.clone(), count })
        .collect();
    ClientJson {
        client_id: meta.client_id,
        hostname: meta.hostname,
        version: "V2".to_owned(),
        remote_address: client.remote.to_string(),
        state: client.state(),
        ready_count: consumer.map_or(0, |c| c.ready_count),
        in_flight_count: consumer.map_or(0, |c| c.in_flight_count),
        message_count: consumer.map_or(0, |c| c.message_count),
        finish_count: consumer.map_or(0, |c| c.finish_count),
        requeue_count: consumer.map_or(0, |c| c.requeue_count),
        connect_ts: client.connect_ts,
        sample_rate: meta.sample_rate,
        deflate: matches!(meta.compression, Some(Compression::Deflate { .. })),
        snappy: meta.compression == Some(Compression::Snappy),
        user_agent: meta.user_agent,
        authed: meta.authed,
        auth_identity: meta.auth_identity,
        auth_identity_url: meta.auth_identity_url,
        topology_zone: meta.topology_zone,
        topology_region: meta.topology_region,
        pub_counts,
        tls: meta.tls.is_some(),
        tls_cipher_suite: meta.tls.as_ref().map(|t| t.cipher_suite.clone()).unwrap_or_default(),
        tls_version: meta.tls.as_ref().map(|t| t.version.clone()).unwrap_or_default(),
        // No ALPN protocols are offered, as in nsqd; Go reports "mutual" as always true.
        tls_negotiated_protocol: String::new(),
        tls_negotiated_protocol_is_mutual: meta.tls.is_some(),
    }
}

fn channel_json(
    topic: &str,
    channel: &ChannelStats,
    clients: &[std::sync::Arc<Client>],
    include_clients: bool,
    topic_filter: &str,
) -> ChannelJson {
    let clients = include_clients.then(|| {
        clients
            .iter()
            .filter_map(|client| {
                let sub = client.meta().subscription.clone()?;
                if sub.topic != topic || sub.channel != channel.name {
                    return None;
                }
                let consumer = channel.consumers.iter().find(|c| c.id == sub.consumer_id)?;
                Some(client_json(client, Some(consumer), topic_filter))
            })
            .collect()
    });
    ChannelJson {
        channel_name: channel.name.clone(),
        depth: channel.depth,
        backend_depth: channel.backend_depth,
        in_flight_count: channel.in_flight_count,
        deferred_count: channel.deferred_count,
        message_count: channel.message_count,
        requeue_count: channel.requeue_count,
        timeout_count: channel.timeout_count,
        client_count: channel.client_count,
        clients,
        paused: channel.paused,
        e2e_processing_latency: latency(channel.e2e_processing_latency.as_ref()),
    }
}

fn topic_json(
    topic: &TopicStats,
    channel_filter: &str,
    clients: &[std::sync::Arc<Client>],
    include_clients: bool,
    topic_filter: &str,
) -> TopicJson {
    TopicJson {
        topic_name: topic.name.clone(),
        channels: topic
            .channels
            .iter()
            .filter(|c| channel_filter.is_empty() || c.name == channel_filter)
            .map(|c| channel_json(&topic.name, c, clients, include_clients, topic_filter))
            .collect(),
        depth: topic.depth,
        backend_depth: topic.backend_depth,
        message_count: topic.message_count,
        message_bytes: topic.message_bytes,
        paused: topic.paused,
        e2e_processing_latency: latency(topic.e2e_processing_latency.as_ref()),
    }
}

/// The delivery counters of a client that is subscribed, for its entry among the producers
/// (nsqd shows a client's own counters wherever it lists it).
fn consumer_stats(nsqd: &Nsqd, client: &Client) -> Option<ConsumerStats> {
    let sub = client.meta().subscription.clone()?;
    let channel = nsqd.engine.get_topic(&sub.topic)?.get_channel(&sub.channel)?;
    channel.stats().consumers.into_iter().find(|c| c.id == sub.consumer_id)
}

/// What `/stats` asks for.
#[derive(Debug, Default)]
pub(crate) struct StatsQuery {
    pub(crate) topic: String,
    pub(crate) channel: String,
    pub(crate) include_clients: bool,
    pub(crate) include_mem: bool,
}

pub(crate) fn collect(nsqd: &Nsqd, query: &StatsQuery) -> StatsResponse {
    let clients = nsqd.clients.all();
    // As nsqd: a topic filter naming no topic gives `null` topics; a channel filter leaves
    // out the topics without that channel.
    let topics: Option<Vec<TopicJson>> = if query.topic.is_empty() {
        Some(nsqd.engine.topics())
    } else {
        nsqd.engine.get_topic(&query.topic).map(|t| vec![t])
    }
    .map(|topics| {
        topics
            .iter()
            .map(|t| t.stats())
            .filter(|t| {
                query.channel.is_empty() || t.channels.iter().any(|c| c.name == query.channel)
            })
            .map(|t| topic_json(&t, &query.channel, &clients, query.include_clients, &query.topic))
            .collect()
    });
    // nsqd returns before it lists the producers when the topic filter names no topic.
    let producers: Vec<ClientJson> = if query.include_clients && topics.is_some() {
        clients
            .iter()
            .filter(|c| !c.meta().pub_counts.is_empty())
            .map(|c| client_json(c, consumer_stats(nsqd, c).as_ref(), &query.topic))
            .collect()
    } else {
        Vec::new()
    };
    let memory = query.include_mem.then(|| MemoryJson {
        heap_objects: 0,
        heap_idle_bytes: 0,
        heap_in_use_bytes: resident_bytes(),
        heap_released_bytes: 0,
        gc_pause_usec_100: 0,
        gc_pause_usec_99: 0,
        gc_pause_usec_95: 0,
        next_gc_bytes: 0,
        gc_total_runs: 0,
    });
    StatsResponse {
        version: NSQ_VERSION.to_owned(),
        health: health(nsqd),
        start_time: nsqd.start_time,
        topics,
        memory,
        producers: (!producers.is_empty()).then_some(producers),
    }
}

/// `OK`, or `NOK - <why>` after a failed write.
pub(crate) fn health(nsqd: &Nsqd) -> String {
    match nsqd.engine.health() {
        None => "OK".to_owned(),
        Some(error) => format!("NOK - {error}"),
    }
}

/// nsqd's `stringy.NanoSecondToHuman`: one decimal, in the largest unit the value exceeds.
fn nanos_to_human(nanos: f64) -> String {
    let (value, unit) = if nanos > 1e9 {
        (nanos / 1e9, "s")
    } else if nanos > 1e6 {
        (nanos / 1e6, "ms")
    } else if nanos > 1e3 {
        (nanos / 1e3, "us")
    } else {
        (nanos, "ns")
    };
    format!("{value:.1}{unit}")
}

/// The `e2e%` column as nsqd prints a `quantile.Result`: the values, comma-separated.
fn latency_text(latency: &LatencyJson) -> String {
    let percentiles = latency.percentiles.as_deref().unwrap_or_default();
    let values: Vec<String> = percentiles
        .iter()
        .map(|p| nanos_to_human(p.get("value").and_then(Value::as_f64).unwrap_or(0.0)))
        .collect();
    values.join(", ")
}

fn client_text(client: &ClientJson, now: i64) -> String {
    let connected = Duration::from_secs(u64::try_from(now - client.connect_ts).unwrap_or(0));
    let port = client.remote_address.rsplit(':').next().unwrap_or("");
    let id = format!("{}:{} {}", client.hostname, port, client.user_agent);
    if !client.pub_counts.is_empty() {
        let total: u64 = client.pub_counts.iter().map(|p| p.count).sum();
        let topics: Vec<String> =
            client.pub_counts.iter().map(|p| format!("{}={}", p.topic, p.count)).collect();
        return format!(
            "[{} {:<21}] msgs: {:<8} topics: {} connected: {}",
            client.version,
            id,
            total,
            topics.join(","),
            humantime::format_duration(connected)
        );
    }
    format!(
        "[{} {:<21}] state: {} inflt: {:<4} rdy: {:<4} fin: {:<8} re-q: {:<8} msgs: {:<8} connected: {}",
        client.version,
        id,
        client.state,
        client.in_flight_count,
        client.ready_count,
        client.finish_count,
        client.requeue_count,
        client.message_count,
        humantime::format_duration(connected)
    )
}

/// nsqd's plain-text `/stats`.
pub(crate) fn text(stats: &StatsResponse) -> String {
    use std::fmt::Write as _;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let start = UNIX_EPOCH + Duration::from_secs(u64::try_from(stats.start_time).unwrap_or(0));
    let uptime = Duration::from_secs(u64::try_from(now - stats.start_time).unwrap_or(0));
    let mut w = String::new();
    let _ = writeln!(w, "{}", version_line("nsqd"));
    let _ = writeln!(w, "start_time {}", humantime::format_rfc3339_seconds(start));
    let _ = writeln!(w, "uptime {}", humantime::format_duration(uptime));
    let _ = writeln!(w, "\nHealth: {}", stats.health);
    if let Some(m) = &stats.memory {
        let _ = writeln!(w, "\nMemory:");
        for (name, value) in [
            ("heap_objects", m.heap_objects),
            ("heap_idle_bytes", m.heap_idle_bytes),
            ("heap_in_use_bytes", m.heap_in_use_bytes),
            ("heap_released_bytes", m.heap_released_bytes),
            ("gc_pause_usec_100", m.gc_pause_usec_100),
            ("gc_pause_usec_99", m.gc_pause_usec_99),
            ("gc_pause_usec_95", m.gc_pause_usec_95),
            ("next_gc_bytes", m.next_gc_bytes),
            ("gc_total_runs", u64::from(m.gc_total_runs)),
        ] {
            let _ = writeln!(w, "   {name:<25}\t{value}");
        }
    }
    let topics = stats.topics.as_deref().unwrap_or_default();
    if topics.is_empty() {
        let _ = writeln!(w, "\nTopics: None");
    } else {
        let _ = write!(w, "\nTopics:");
    }
    for t in topics {
        let prefix = if t.paused { "*P " } else { "   " };
        let _ = writeln!(
            w,
            "\n{prefix}[{:<15}] depth: {:<5} be-depth: {:<5} msgs: {:<8} e2e%: {}",
            t.topic_name,
            t.depth,
            t.backend_depth,
            t.message_count,
            latency_text(&t.e2e_processing_latency)
        );
        for c in &t.channels {
            let prefix = if c.paused { "   *P " } else { "      " };
            let _ = writeln!(
                w,
                "{prefix}[{:<25}] depth: {:<5} be-depth: {:<5} inflt: {:<4} def: {:<4} re-q: {:<5} timeout: {:<5} msgs: {:<8} e2e%: {}",
                c.channel_name,
                c.depth,
                c.backend_depth,
                c.in_flight_count,
                c.deferred_count,
                c.requeue_count,
                c.timeout_count,
                c.message_count,
                latency_text(&c.e2e_processing_latency)
            );
            for client in c.clients.as_deref().unwrap_or_default() {
                let _ = writeln!(w, "        {}", client_text(client, now));
            }
        }
    }
    let producers = stats.producers.as_deref().unwrap_or_default();
    if producers.is_empty() {
        let _ = writeln!(w, "\nProducers: None");
    } else {
        let _ = writeln!(w, "\nProducers:");
        for client in producers {
            let _ = writeln!(w, "   {}", client_text(client, now));
        }
    }
    w
}
