//! nsqlookupd's HTTP API (NSQ.md §4.4) in NSQ's V1 envelope, nsqd's ([`crate::http_api`]): a
//! 200 carries an empty body or a JSON document. Each handler makes one registry call.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Lookupd;
use crate::http_api::{self, HttpResult, Query, error, ok_empty, ok_json};
use crate::options::NSQ_VERSION;

type Shared = Arc<Lookupd>;

pub(super) async fn serve(lookupd: Shared, listener: TcpListener, shutdown: CancellationToken) {
    http_api::serve(listener, router(lookupd), shutdown, "HTTP").await;
}

fn router(lookupd: Shared) -> Router {
    let routes = Router::new()
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
        .route("/channel/delete", post(channel_delete));
    // nsqlookupd logs every request at INFO.
    http_api::with_fallbacks_and_log(routes, &[]).with_state(lookupd)
}

/// `{"<key>": value}`, with `value` in its own key order.
fn one_key(key: &str, value: impl Serialize) -> Response {
    ok_json(&[(key, value)].into_iter().collect::<BTreeMap<_, _>>())
}

async fn info() -> Response {
    one_key("version", NSQ_VERSION)
}

async fn debug(State(lookupd): State<Shared>) -> Response {
    ok_json(&lookupd.registry.debug())
}

async fn lookup(State(lookupd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    let query = Query::parse(raw.as_deref())?;
    let found = lookupd.registry.lookup(query.topic()?);
    Ok(ok_json(&found.ok_or(error(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"))?))
}

async fn topics(State(lookupd): State<Shared>) -> Response {
    one_key("topics", lookupd.registry.topics())
}

async fn channels(State(lookupd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    let query = Query::parse(raw.as_deref())?;
    Ok(one_key("channels", lookupd.registry.channels(query.topic()?)))
}

async fn nodes(State(lookupd): State<Shared>) -> Response {
    one_key("producers", lookupd.registry.nodes())
}

async fn topic_create(State(lookupd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    lookupd.registry.add_topic(Query::parse(raw.as_deref())?.valid_topic()?);
    Ok(ok_empty())
}

async fn topic_delete(State(lookupd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    lookupd.registry.delete_topic(Query::parse(raw.as_deref())?.topic()?);
    Ok(ok_empty())
}

async fn topic_tombstone(State(lookupd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    let query = Query::parse(raw.as_deref())?;
    let topic = query.topic()?;
    lookupd.registry.tombstone(topic, query.require("node", "MISSING_ARG_NODE")?);
    Ok(ok_empty())
}

async fn channel_create(State(lookupd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    let query = Query::parse(raw.as_deref())?;
    let (topic, channel) = query.topic_and_channel()?;
    lookupd.registry.add_channel(topic, channel);
    Ok(ok_empty())
}

async fn channel_delete(State(lookupd): State<Shared>, RawQuery(raw): RawQuery) -> HttpResult {
    let query = Query::parse(raw.as_deref())?;
    let (topic, channel) = query.topic_and_channel()?;
    if !lookupd.registry.delete_channel(topic, channel) {
        return Err(error(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"));
    }
    Ok(ok_empty())
}
