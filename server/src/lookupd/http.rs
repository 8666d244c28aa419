//! nsqlookupd's HTTP API (NSQ.md §4.4) with NSQ's V1 envelope, as nsqd's: a 200 carries an
//! empty body or a JSON document, an error is `{"message":"<TEXT>"}` with its status, and every
//! reply but `/ping` has `X-NSQ-Content-Type: nsq; version=1.0`. Parameters come from the query
//! string only. Each handler makes one registry call.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use engine::names::is_valid_name;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Lookupd;
use crate::options::NSQ_VERSION;

type Shared = Arc<Lookupd>;

pub(super) async fn serve(lookupd: Shared, listener: TcpListener, shutdown: CancellationToken) {
    let served = axum::serve(listener, router(lookupd))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "HTTP server failed");
    }
    tracing::info!("HTTP: closing");
}

fn router(lookupd: Shared) -> Router {
    Router::new()
        .route("/ping", get(|| async { "OK" }))
        .route("/info", get(info))
        .route("/debug", get(debug))
        .route("/lookup", get(lookup))
        .route("/topics", get(topics))
        .route("/channels", get(channels))
        .route("/nodes", get(nodes))
        .route("/topic/create", post(topic_create))
        .route("/topic/delete", post(topic_delete))
        .route("/topic/tombstone", post(topic_tombstone))
        .route("/channel/create", post(channel_create))
        .route("/channel/delete", post(channel_delete))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "NOT_FOUND") })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
        })
        .layer(middleware::from_fn(access_log))
        .with_state(lookupd)
}

/// nsqlookupd logs every request at INFO.
async fn access_log(request: Request, next: Next) -> Response {
    let (method, uri, start) = (request.method().clone(), request.uri().clone(), Instant::now());
    let response = next.run(request).await;
    tracing::info!("{} {method} {uri} {:?}", response.status().as_u16(), start.elapsed());
    response
}

/// A V1 reply with its headers; a body that is not JSON is empty, and has no type.
fn v1(status: StatusCode, json: Option<Vec<u8>>) -> Response {
    let is_json = json.is_some();
    let mut response = (status, json.unwrap_or_default()).into_response();
    let headers = response.headers_mut();
    if is_json {
        let json_type = HeaderValue::from_static("application/json; charset=utf-8");
        headers.insert(header::CONTENT_TYPE, json_type);
    } else {
        headers.remove(header::CONTENT_TYPE);
    }
    headers.insert("X-NSQ-Content-Type", HeaderValue::from_static("nsq; version=1.0"));
    response
}

/// A V1 success: nothing, or a JSON document.
enum Reply {
    Empty,
    Json(Vec<u8>),
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Reply::Empty => v1(StatusCode::OK, None),
            Reply::Json(body) => v1(StatusCode::OK, Some(body)),
        }
    }
}

/// An error reply: its status and `{"message":"<TEXT>"}`.
#[derive(Debug, Clone, Copy)]
struct ApiError(StatusCode, &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.1 }).to_string();
        v1(self.0, Some(body.into_bytes()))
    }
}

type V1 = Result<Reply, ApiError>;

fn json(document: &impl Serialize) -> V1 {
    match serde_json::to_vec(document) {
        Ok(body) => Ok(Reply::Json(body)),
        Err(_) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")),
    }
}

/// `{"<key>": value}`, with `value` in its own key order.
fn one_key(key: &str, value: impl Serialize) -> V1 {
    json(&[(key, value)].into_iter().collect::<std::collections::BTreeMap<_, _>>())
}

fn bad_request(message: &'static str) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

/// The query string, refused (400 `INVALID_REQUEST`) where Go's `url.ParseQuery` fails: a `%`
/// not followed by two hex digits, or a `;`.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<String>) -> Result<Query, ApiError> {
        let raw = raw.unwrap_or_default();
        let escapes_valid = raw.split('%').skip(1).all(|after| {
            after.as_bytes().get(..2).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
        });
        if !escapes_valid || raw.contains(';') {
            return Err(bad_request("INVALID_REQUEST"));
        }
        Ok(Query(form_urlencoded::parse(raw.as_bytes()).into_owned().collect()))
    }

    /// The first value of `key` (an empty one counts), or 400 `missing`.
    fn get(&self, key: &str, missing: &'static str) -> Result<&str, ApiError> {
        let value = self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        value.ok_or_else(|| bad_request(missing))
    }

    fn topic(&self) -> Result<&str, ApiError> {
        self.get("topic", "MISSING_ARG_TOPIC")
    }

    /// A valid `topic`, then a valid `channel` (NSQ's `GetTopicChannelArgs`).
    fn topic_and_channel(&self) -> Result<(&str, &str), ApiError> {
        let topic = self.valid_topic()?;
        let channel = self.get("channel", "MISSING_ARG_CHANNEL")?;
        if !is_valid_name(channel) {
            return Err(bad_request("INVALID_ARG_CHANNEL"));
        }
        Ok((topic, channel))
    }

    fn valid_topic(&self) -> Result<&str, ApiError> {
        let topic = self.topic()?;
        if !is_valid_name(topic) {
            return Err(bad_request("INVALID_ARG_TOPIC"));
        }
        Ok(topic)
    }
}

async fn info() -> V1 {
    one_key("version", NSQ_VERSION)
}

async fn debug(State(lookupd): State<Shared>) -> V1 {
    json(&lookupd.registry.debug())
}

async fn lookup(State(lookupd): State<Shared>, RawQuery(raw): RawQuery) -> V1 {
    let query = Query::parse(raw)?;
    let found = lookupd.registry.lookup(query.topic()?);
    json(&found.ok_or(ApiError(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"))?)
}

async fn topics(State(lookupd): State<Shared>) -> V1 {
    one_key("topics", lookupd.registry.topics())
}

async fn channels(State(lookupd): State<Shared>, RawQuery(raw): RawQuery) -> V1 {
    let query = Query::parse(raw)?;
    one_key("channels", lookupd.registry.channels(query.topic()?))
}

async fn nodes(State(lookupd): State<Shared>) -> V1 {
    one_key("producers", lookupd.registry.nodes())
}

async fn topic_create(State(lookupd): State<Shared>, RawQuery(raw): RawQuery) -> V1 {
    lookupd.registry.add_topic(Query::parse(raw)?.valid_topic()?);
    Ok(Reply::Empty)
}

async fn topic_delete(State(lookupd): State<Shared>, RawQuery(raw): RawQuery) -> V1 {
    lookupd.registry.delete_topic(Query::parse(raw)?.topic()?);
    Ok(Reply::Empty)
}

async fn topic_tombstone(State(lookupd): State<Shared>, RawQuery(raw): RawQuery) -> V1 {
    let query = Query::parse(raw)?;
    let topic = query.topic()?;
    lookupd.registry.tombstone(topic, query.get("node", "MISSING_ARG_NODE")?);
    Ok(Reply::Empty)
}

async fn channel_create(State(lookupd): State<Shared>, RawQuery(raw): RawQuery) -> V1 {
    let query = Query::parse(raw)?;
    let (topic, channel) = query.topic_and_channel()?;
    lookupd.registry.add_channel(topic, channel);
    Ok(Reply::Empty)
}

async fn channel_delete(State(lookupd): State<Shared>, RawQuery(raw): RawQuery) -> V1 {
    let query = Query::parse(raw)?;
    let (topic, channel) = query.topic_and_channel()?;
    if !lookupd.registry.delete_channel(topic, channel) {
        return Err(ApiError(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"));
    }
    Ok(Reply::Empty)
}
