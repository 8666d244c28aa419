//! NSQ's HTTP "V1" envelope, as nsqd and nsqlookupd both answer: 200 with a raw body (or JSON
//! for objects), errors as `{"message":"<TEXT>"}` with their status, and `X-NSQ-Content-Type:
//! nsq; version=1.0` on every reply but `/ping`. Around the routes: parameters from the query
//! string only, read as Go reads them; 404 and 405 in the envelope; every request logged at
//! INFO; a graceful stop. And the client side nsqd uses towards auth servers and lookupds
//! ([`send_v1`]).

use std::fmt::Debug;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use engine::names::is_valid_name;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const NSQ_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("nsq; version=1.0");
const JSON_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");
const TEXT_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// Serves `app` until `shutdown`, then lets the requests in progress finish. `protocol`
/// (`HTTP`, `HTTPS`) names the server in its log lines.
pub(crate) async fn serve<L>(
    listener: L,
    app: Router,
    shutdown: CancellationToken,
    protocol: &'static str,
) where
    L: Listener,
    L::Addr: Debug,
{
    let served =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    if let Err(error) = served {
        tracing::error!(%error, "{protocol} server failed");
    }
    tracing::info!("{protocol}: closing");
}

/// `routes` with the envelope's 404 and 405, and a log line for every request but those to
/// the `quiet` paths.
pub(crate) fn with_fallbacks_and_log<S>(
    routes: Router<S>,
    quiet: &'static [&'static str],
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes
        .fallback(|| async { error(StatusCode::NOT_FOUND, "NOT_FOUND") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
        })
        .layer(middleware::from_fn_with_state(quiet, access_log))
}

/// NSQ's access log: status, method, target and duration.
async fn access_log(
    State(quiet): State<&'static [&'static str]>,
    request: Request,
    next: Next,
) -> Response {
    let logged = !quiet.contains(&request.uri().path());
    let (method, uri, start) = (request.method().clone(), request.uri().clone(), Instant::now());
    let response = next.run(request).await;
    if logged {
        tracing::info!("{} {method} {uri} {:?}", response.status().as_u16(), start.elapsed());
    }
    response
}

/// A V1 reply: `body` with its type (JSON, text, or none when empty) and the V1 header.
pub(crate) fn v1(status: StatusCode, json: bool, body: Vec<u8>) -> Response {
    let empty = body.is_empty();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    // Go's server sniffs a type for a body written without one: text here.
    if json {
        headers.insert(header::CONTENT_TYPE, JSON_CONTENT_TYPE);
    } else if empty {
        headers.remove(header::CONTENT_TYPE);
    } else {
        headers.insert(header::CONTENT_TYPE, TEXT_CONTENT_TYPE);
    }
    headers.insert("X-NSQ-Content-Type", NSQ_CONTENT_TYPE);
    response
}

/// An error reply: `{"message":"<TEXT>"}` with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: &'static str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        v1(self.status, true, json!({ "message": self.message }).to_string().into_bytes())
    }
}

pub(crate) type HttpResult = Result<Response, ApiError>;

pub(crate) fn error(status: StatusCode, message: &'static str) -> ApiError {
    ApiError { status, message }
}

pub(crate) fn bad_request(message: &'static str) -> ApiError {
    error(StatusCode::BAD_REQUEST, message)
}

pub(crate) fn internal_error() -> ApiError {
    error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
}

pub(crate) fn ok_text(text: &str) -> Response {
    v1(StatusCode::OK, false, text.as_bytes().to_vec())
}

pub(crate) fn ok_empty() -> Response {
    v1(StatusCode::OK, false, Vec::new())
}

pub(crate) fn ok_json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => v1(StatusCode::OK, true, body),
        Err(_) => internal_error().into_response(),
    }
}

/// The query string, parsed as Go's `url.ParseQuery` does: a malformed escape or a `;` is an
/// error (400 `INVALID_REQUEST`).
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let raw = raw.unwrap_or("");
        let bytes = raw.as_bytes();
        let bad_escape = bytes.iter().enumerate().any(|(i, &b)| {
            b == b'%'
                && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        });
        if bad_escape || raw.contains(';') {
            return Err(bad_request("INVALID_REQUEST"));
        }
        Ok(Query(form_urlencoded::parse(bytes).into_owned().collect()))
    }

    /// The first value of `key`, `None` when the key is absent (an empty value is present).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The first value of `key`, or 400 `missing`.
    pub(crate) fn require(&self, key: &str, missing: &'static str) -> Result<&str, ApiError> {
        self.get(key).ok_or_else(|| bad_request(missing))
    }

    /// NSQ's boolean parameters: `true`/`1`/`false`/`0`; anything else counts as true.
    pub(crate) fn flag(&self, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some("false" | "0") => false,
            Some(_) => true,
        }
    }

    /// `topic`, present, not checked.
    pub(crate) fn topic(&self) -> Result<&str, ApiError> {
        self.require("topic", "MISSING_ARG_TOPIC")
    }

    /// `topic`, present and a valid name.
    pub(crate) fn valid_topic(&self) -> Result<&str, ApiError> {
        let topic = self.topic()?;
        if !is_valid_name(topic) {
            return Err(bad_request("INVALID_ARG_TOPIC"));
        }
        Ok(topic)
    }

    /// A valid `topic`, then a valid `channel` (NSQ's `GetTopicChannelArgs`).
    pub(crate) fn topic_and_channel(&self) -> Result<(&str, &str), ApiError> {
        let topic = self.valid_topic()?;
        let channel = self.require("channel", "MISSING_ARG_CHANNEL")?;
        if !is_valid_name(channel) {
            return Err(bad_request("INVALID_ARG_CHANNEL"));
        }
        Ok((topic, channel))
    }
}

/// Sends a request to another NSQ daemon's (or an auth server's) HTTP API as nsqd's `GETV1`
/// and `POSTV1` do, with `Accept: application/vnd.nsq; version=1.0`, and reads the whole
/// reply: its status and body. Errors are texts with their causes, for the log.
pub(crate) async fn send_v1(
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, bytes::Bytes), String> {
    let response = request
        .header("Accept", "application/vnd.nsq; version=1.0")
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| error_chain(&e))?;
    Ok((status, body))
}

/// nsqd's error for a reply other than 200.
pub(crate) fn unexpected_reply(status: StatusCode, body: &[u8]) -> String {
    format!("got response {status} {:?}", String::from_utf8_lossy(body))
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
