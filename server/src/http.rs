//! nsqd's HTTP API, in NSQ's "V1" envelope ([`crate::http_api`]) with nsqd's status codes and
//! texts. Bodies are refused by their Content-Length before they are read, and read with a
//! limit.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use engine::EngineError;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use protocol::ErrorCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http_api::{
    self, ApiError, HttpResult, Query, bad_request, error, internal_error, ok_empty, ok_json,
    ok_text,
};
use crate::logging::LogLevel;
use crate::nsqd::Nsqd;
use crate::options::{NSQ_VERSION, TlsRequired};
use crate::stats::{self, StatsQuery};
use crate::tls::HttpsListener;

type Shared = Arc<Nsqd>;

/// Serves plain HTTP; with `--tls-required=true` every request is answered 403, pointing to
/// the HTTPS port, as nsqd does.
pub(crate) async fn serve(nsqd: Shared, listener: TcpListener, shutdown: CancellationToken) {
    let mut app = router(Arc::clone(&nsqd));
    if nsqd.tls_required == TlsRequired::Yes {
        app = app.layer(middleware::from_fn_with_state(nsqd, refuse_without_tls));
    }
    http_api::serve(listener, app, shutdown, "HTTP").await;
}

/// Serves the same API over TLS.
pub(crate) async fn serve_https(
    nsqd: Shared,
    listener: HttpsListener,
    shutdown: CancellationToken,
) {
    http_api::serve(listener, router(nsqd), shutdown, "HTTPS").await;
}

async fn refuse_without_tls(
    State(nsqd): State<Shared>,
    _request: Request,
    _next: Next,
) -> Response {
    // nsqd's exact body, spacing included.
    let body = format!(r#"{{"message": "TLS_REQUIRED", "https_port": {}}}"#, nsqd.https_port);
    http_api::v1(StatusCode::FORBIDDEN, true, body.into_bytes())
}

fn router(nsqd: Shared) -> Router {
    let routes = Router::new()
        .route("/ping", get(ping))
        .route("/info", get(info))
        .route("/pub", post(publish))
        .route("/mpub", post(mpub))
        .route("/stats", get(stats_handler))
        .route("/topic/create", post(topic_create))
        .route("/topic/delete", post(topic_delete))
        .route("/topic/empty", post(topic_empty))
        .route("/topic/pause", post(topic_pause))
        .route("/topic/unpause", post(topic_unpause))
        .route("/channel/create", post(channel_create))
        .route("/channel/delete", post(channel_delete))
        .route("/channel/empty", post(channel_empty))
        .route("/channel/pause", post(channel_pause))
        .route("/channel/unpause", post(channel_unpause))
        .route("/config/{opt}", get(config_get).put(config_put));
    // nsqd logs every request at INFO but publishes.
    http_api::with_fallbacks_and_log(routes, &["/pub", "/mpub"]).with_state(nsqd)
}

/// Runs engine work that may touch the disk off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|_| internal_error())
}

/// Reads a body of at most `max` bytes; a longer one is 413 `too_big`, a failed read 500.
async fn read_body(body: Body, max: u64, too_big: &'static str) -> Result<Vec<u8>, ApiError> {
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(error(StatusCode::PAYLOAD_TOO_LARGE, too_big))
        }
        Err(_) => Err(internal_error()),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

async fn ping(State(nsqd): State<Shared>) -> Response {
    match nsqd.engine.health() {
        None => (StatusCode::OK, "OK").into_response(),
        Some(reason) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("NOK - {reason}")).into_response()
        }
    }
}

async fn info(State(nsqd): State<Shared>) -> Response {
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let options = &nsqd.options;
    ok_json(&json!({
        "version": NSQ_VERSION,
        "broadcast_address": nsqd.broadcast_address,
        "hostname": nsqd.hostname,
        "http_port": nsqd.http_port,
        "tcp_port": nsqd.tcp_port,
        "start_time": nsqd.start_time,
        "max_heartbeat_interval": nanos(options.max_heartbeat_interval),
        "max_output_buffer_size": options.max_output_buffer_size,
        "max_output_buffer_timeout": nanos(options.max_output_buffer_timeout),
        "max_deflate_level": options.max_deflate_level,
        "topology_zone": "",
        "topology_region": "",
    }))
}

/// `topic` for `/pub`, `/mpub` and `/topic/create`: present and valid; the topic is created.
async fn topic_from_query(nsqd: &Shared, query: &Query) -> Result<Arc<engine::Topic>, ApiError> {
    let name = query.topic()?;
    if !engine::names::is_valid_name(name) {
        return Err(bad_request("INVALID_TOPIC"));
    }
    nsqd.topic(name).await.map_err(|e| engine_error(&e))
}

fn engine_error(failure: &EngineError) -> ApiError {
    match failure {
        EngineError::Exiting(_) => error_exiting(),
        EngineError::TopicNotFound(_) => error(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"),
        EngineError::ChannelNotFound { .. } => error(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"),
        other => {
            tracing::error!(error = %other, "HTTP request failed");
            internal_error()
        }
    }
}

fn error_exiting() -> ApiError {
    error(StatusCode::SERVICE_UNAVAILABLE, "EXITING")
}

async fn put(
    nsqd: &Shared,
    topic: Arc<engine::Topic>,
    body: Vec<u8>,
    ranges: Vec<Range<usize>>,
    defer: Duration,
) -> HttpResult {
    nsqd.publish(topic, body, ranges, defer).await.map_err(|e| engine_error(&e))?;
    Ok(ok_text("OK"))
}

async fn publish(
    State(nsqd): State<Shared>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> HttpResult {
    let max = nsqd.options.max_msg_size;
    if content_length(&headers).is_some_and(|len| len > max) {
        return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "MSG_TOO_BIG"));
    }
    let body = read_body(body, max, "MSG_TOO_BIG").await?;
    if body.is_empty() {
        return Err(bad_request("MSG_EMPTY"));
    }
    let query = Query::parse(raw.as_deref())?;
    let topic = topic_from_query(&nsqd, &query).await?;
    let mut defer = Duration::ZERO;
    if let Some(text) = query.get("defer") {
        let ms: i64 = text.parse().map_err(|_| bad_request("INVALID_DEFER"))?;
        let ms = u64::try_from(ms).map_err(|_| bad_request("INVALID_DEFER"))?;
        defer = Duration::from_millis(ms);
        if defer > nsqd.options.max_req_timeout {
            return Err(bad_request("INVALID_DEFER"));
        }
    }
    let whole = 0..body.len();
    put(&nsqd, topic, body, vec![whole], defer).await
}

async fn mpub(
    State(nsqd): State<Shared>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> HttpResult {
    let (max_body, max_msg) = (nsqd.options.max_body_size, nsqd.options.max_msg_size);
    if content_length(&headers).is_some_and(|len| len > max_body) {
        return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_BIG"));
    }
    let query = Query::parse(raw.as_deref())?;
    let topic = topic_from_query(&nsqd, &query).await?;
    let body = read_body(body, max_body, "BODY_TOO_BIG").await?;
    let ranges = if query.flag("binary", false) {
        // nsqd answers with the TCP error code without its `E_`.
        protocol::mpub::decode_mpub_ranges(&body, max_msg, max_body).map_err(|e| {
            let message = if e.code == ErrorCode::BadMessage { "BAD_MESSAGE" } else { "BAD_BODY" };
            error(StatusCode::PAYLOAD_TOO_LARGE, message)
        })?
    } else {
        // Lines, without their `\n`; empty ones are skipped.
        let mut ranges = Vec::new();
        let mut start = 0;
        for line in body.split(|&b| b == b'\n') {
            let range = start..start + line.len();
            start = range.end + 1;
            if line.is_empty() {
                continue;
            }
            if u64::try_from(line.len()).unwrap_or(u64::MAX) > max_msg {
                return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "MSG_TOO_BIG"));
            }
            ranges.push(range);
        }
        ranges
    };
    put(&nsqd, topic, body, ranges, Duration::ZERO).await
}

async fn stats_handler(State(nsqd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    let query = Query::parse(raw.as_deref())?;
    let request = StatsQuery {
        topic: query.get("topic").unwrap_or_default().to_owned(),
        channel: query.get("channel").unwrap_or_default().to_owned(),
        include_clients: query.flag("include_clients", true),
        include_mem: query.flag("include_mem", true),
    };
    let json = query.get("format") == Some("json");
    let collected = {
        let nsqd = Arc::clone(&nsqd);
        blocking(move || stats::collect(&nsqd, &request)).await?
    };
    if json { Ok(ok_json(&collected)) } else { Ok(ok_text(&stats::text(&collected))) }
}

async fn topic_create(State(nsqd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    let query = Query::parse(raw.as_deref())?;
    topic_from_query(&nsqd, &query).await?;
    Ok(ok_empty())
}

async fn topic_delete(State(nsqd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    let query = Query::parse(raw.as_deref())?;
    let name = query.topic()?.to_owned();
    let engine = Arc::clone(&nsqd.engine);
    blocking(move || engine.delete_topic(&name)).await?.map_err(|e| match e {
        EngineError::TopicNotFound(_) | EngineError::InvalidTopicName(_) => {
            error(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND")
        }
        other => engine_error(&other),
    })?;
    Ok(ok_empty())
}

/// The existing topic named by `topic`, validated first when `validate`.
fn existing_topic(
    nsqd: &Shared,
    query: &Query,
    validate: bool,
) -> Result<Arc<engine::Topic>, ApiError> {
    let name = query.topic()?;
    if validate && !engine::names::is_valid_name(name) {
        return Err(bad_request("INVALID_TOPIC"));
    }
    nsqd.engine.get_topic(name).ok_or_else(|| error(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"))
}

async fn topic_empty(State(nsqd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    let query = Query::parse(raw.as_deref())?;
    let topic = existing_topic(&nsqd, &query, true)?;
    blocking(move || topic.empty()).await?.map_err(|e| engine_error(&e))?;
    Ok(ok_empty())
}

async fn topic_pause(State(nsqd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    set_topic_paused(&nsqd, raw, true).await
}

async fn topic_unpause(State(nsqd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    set_topic_paused(&nsqd, raw, false).await
}

async fn set_topic_paused(nsqd: &Shared, raw: Option<String>, paused: bool) -> HttpResult {
    let query = Query::parse(raw.as_deref())?;
    let topic = existing_topic(nsqd, &query, false)?;
    let result = blocking(move || if paused { topic.pause() } else { topic.unpause() }).await?;
    result.map_err(|e| engine_error(&e))?;
    Ok(ok_empty())
}

/// `topic` and `channel` for the `/channel/*` endpoints, both checked, the topic existing.
fn channel_args(
    nsqd: &Shared,
    raw: Option<&str>,
) -> Result<(Arc<engine::Topic>, String), ApiError> {
    let query = Query::parse(raw)?;
    let (topic, channel) = query.topic_and_channel()?;
    let topic = nsqd
        .engine
        .get_topic(topic)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"))?;
    Ok((topic, channel.to_owned()))
}

fn existing_channel(topic: &engine::Topic, name: &str) -> Result<Arc<engine::Channel>, ApiError> {
    topic.get_channel(name).ok_or_else(|| error(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"))
}

async fn channel_create(State(nsqd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    let (topic, channel) = channel_args(&nsqd, raw.as_deref())?;
    blocking(move || topic.channel(&channel)).await?.map_err(|e| engine_error(&e))?;
    Ok(ok_empty())
}

async fn channel_delete(State(nsqd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    let (topic, channel) = channel_args(&nsqd, raw.as_deref())?;
    blocking(move || topic.delete_channel(&channel)).await?.map_err(|e| engine_error(&e))?;
    Ok(ok_empty())
}

async fn channel_empty(State(nsqd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    let (topic, channel) = channel_args(&nsqd, raw.as_deref())?;
    let channel = existing_channel(&topic, &channel)?;
    blocking(move || channel.empty()).await?.map_err(|e| engine_error(&e))?;
    Ok(ok_empty())
}

async fn channel_pause(State(nsqd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    set_channel_paused(&nsqd, raw, true).await
}

async fn channel_unpause(State(nsqd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    set_channel_paused(&nsqd, raw, false).await
}

async fn set_channel_paused(nsqd: &Shared, raw: Option<String>, paused: bool) -> HttpResult {
    let (topic, channel) = channel_args(nsqd, raw.as_deref())?;
    let channel = existing_channel(&topic, &channel)?;
    let result = blocking(move || if paused { channel.pause() } else { channel.unpause() }).await?;
    result.map_err(|e| engine_error(&e))?;
    Ok(ok_empty())
}

async fn config_get(State(nsqd): State<Shared>, Path(opt): Path<String>) -> HttpResult {
    let value = config_value(&nsqd, &opt).ok_or_else(|| bad_request("INVALID_OPTION"))?;
    Ok(ok_json(&value))
}

async fn config_put(State(nsqd): State<Shared>, Path(opt): Path<String>, body: Body) -> HttpResult {
    let body = read_body(body, nsqd.options.max_msg_size, "INVALID_VALUE").await?;
    if body.is_empty() {
        return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "INVALID_VALUE"));
    }
    match opt.as_str() {
        "log_level" => {
            let level = std::str::from_utf8(&body)
                .ok()
                .and_then(LogLevel::parse)
                .ok_or_else(|| bad_request("INVALID_VALUE"))?;
            nsqd.log.set_level(level).map_err(|_| internal_error())?;
        }
        "nsqlookupd_tcp_addresses" => {
            let addresses: Vec<String> =
                serde_json::from_slice(&body).map_err(|_| bad_request("INVALID_VALUE"))?;
            nsqd.lookup.set_addresses(&nsqd, &addresses);
        }
        _ => return Err(bad_request("INVALID_OPTION")),
    }
    config_get(State(nsqd), Path(opt)).await
}

/// An option's value by its config-file name, JSON-encoded as nsqd encodes it (durations as
/// integer nanoseconds).
fn config_value(nsqd: &Nsqd, name: &str) -> Option<Value> {
    let o = &nsqd.options;
    let nanos = |d: Duration| json!(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Some(match name {
        "log_level" => json!(nsqd.log.level() as u8),
        "log_prefix" => json!(o.daemon.log_prefix),
        "verbose" => json!(o.daemon.verbose),
        "id" => json!(nsqd.node_id),
        "https_address" => json!(o.https_address),
        "http_address" => json!(o.http_address),
        "tcp_address" => json!(o.tcp_address),
        "broadcast_address" => json!(nsqd.broadcast_address),
        "broadcast_tcp_port" => json!(nsqd.broadcast_tcp_port),
        "broadcast_http_port" => json!(nsqd.broadcast_http_port),
        "nsqlookupd_tcp_addresses" => json!(nsqd.lookup.addresses()),
        "lookupd_ping_interval" => nanos(o.lookupd_ping_interval),
        "data_path" => json!(o.data_path.display().to_string()),
        "mem_queue_size" => json!(o.mem_queue_size),
        "max_bytes_per_file" => json!(o.max_bytes_per_file),
        "sync_every" => json!(o.sync_every),
        "sync_timeout" => nanos(o.sync_timeout),
        "queue_scan_worker_pool_max" => json!(o.queue_scan_worker_pool_max),
        "queue_scan_selection_count" => json!(o.queue_scan_selection_count),
        "msg_timeout" => nanos(o.msg_timeout),
        "max_msg_timeout" => nanos(o.max_msg_timeout),
        "max_msg_size" => json!(o.max_msg_size),
        "max_req_timeout" => nanos(o.max_req_timeout),
        "max_body_size" => json!(o.max_body_size),
        "max_heartbeat_interval" => nanos(o.max_heartbeat_interval),
        "max_rdy_count" => json!(o.max_rdy_count),
        "max_output_buffer_size" => json!(o.max_output_buffer_size),
        "max_output_buffer_timeout" => nanos(o.max_output_buffer_timeout),
        "min_output_buffer_timeout" => nanos(o.min_output_buffer_timeout),
        "output_buffer_timeout" => nanos(o.output_buffer_timeout),
        "max_channel_consumers" => json!(o.max_channel_consumers),
        "e2e_processing_latency_percentiles" => json!(o.e2e_processing_latency_percentiles),
        "e2e_processing_latency_window_time" => nanos(o.e2e_processing_latency_window_time),
        "deflate" => json!(o.deflate),
        "max_deflate_level" => json!(o.max_deflate_level),
        "snappy" => json!(o.snappy),
        "auth_http_addresses" => json!(o.auth_http_addresses),
        "auth_http_request_method" => json!(o.auth_http_request_method),
        "http_client_connect_timeout" => nanos(o.http_client_connect_timeout),
        "http_client_request_timeout" => nanos(o.http_client_request_timeout),
        "tls_cert" => json!(o.tls_cert),
        "tls_key" => json!(o.tls_key),
        "tls_client_auth_policy" => json!(o.tls_client_auth_policy),
        "tls_root_ca_file" => json!(o.tls_root_ca_file),
        "tls_required" => json!(nsqd.tls_required as u8),
        "tls_min_version" => json!(o.tls_min_version as u16),
        _ => return None,
    })
}
