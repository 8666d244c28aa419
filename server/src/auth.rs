//! AUTH against NSQ's auth HTTP servers (NSQ.md §2.9).
//!
//! A client's AUTH secret is sent to the servers of `--auth-http-address`, tried from a random
//! one in turn until one answers, with the client's IP, whether it uses TLS, and the common
//! name of its certificate. The answer lists what the client may do: regular expressions for
//! topics and channels (unanchored, as Go's `MatchString`), each with `publish` and/or
//! `subscribe`, valid for `ttl` seconds. When it has expired the next SUB or publish asks
//! again.

use regex::Regex;
use serde::Deserialize;

use axum::http::StatusCode;

use crate::http_api::{send_v1, unexpected_reply};
use crate::options::Options;

/// The auth servers, and the HTTP client that reaches them.
#[derive(Debug)]
pub(crate) struct AuthServers {
    endpoints: Vec<String>,
    post: bool,
    http: reqwest::Client,
}

/// What the auth server is told of the client.
#[derive(Debug)]
pub(crate) struct AuthQuery<'a> {
    pub(crate) remote_ip: String,
    pub(crate) tls: bool,
    pub(crate) common_name: &'a str,
    pub(crate) secret: &'a str,
}

/// An auth server's answer, validated.
#[derive(Debug)]
pub(crate) struct AuthState {
    pub(crate) identity: String,
    pub(crate) identity_url: String,
    authorizations: Vec<Authorization>,
    /// Engine clock, nanoseconds.
    expires_ns: i64,
}

#[derive(Debug)]
struct Authorization {
    topic: Regex,
    channels: Vec<Regex>,
    publish: bool,
    subscribe: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Reply {
    ttl: i64,
    authorizations: Vec<ReplyAuthorization>,
    identity: String,
    identity_url: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReplyAuthorization {
    topic: String,
    channels: Vec<String>,
    permissions: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Forbidden {
    https_port: u16,
}

impl Authorization {
    /// A publish is checked with an empty channel, as nsqd does: it needs a channel pattern
    /// that matches "".
    fn is_allowed(&self, topic: &str, channel: &str) -> bool {
        let permitted = if channel.is_empty() { self.publish } else { self.subscribe };
        permitted
            && self.topic.is_match(topic)
            && self.channels.iter().any(|pattern| pattern.is_match(channel))
    }
}

impl AuthState {
    pub(crate) fn has_authorizations(&self) -> bool {
        !self.authorizations.is_empty()
    }

    pub(crate) fn permission_count(&self) -> usize {
        self.authorizations.len()
    }

    pub(crate) fn is_allowed(&self, topic: &str, channel: &str) -> bool {
        self.authorizations.iter().any(|a| a.is_allowed(topic, channel))
    }

    pub(crate) fn is_expired(&self, now_ns: i64) -> bool {
        self.expires_ns < now_ns
    }

    fn from_reply(reply: Reply, now_ns: i64) -> Result<Self, String> {
        let compile = |what: &str, pattern: &str| {
            Regex::new(pattern).map_err(|e| format!("unable to compile {what} {pattern:?} {e}"))
        };
        let mut authorizations = Vec::with_capacity(reply.authorizations.len());
        for authorization in reply.authorizations {
            let (mut publish, mut subscribe) = (false, false);
            for permission in &authorization.permissions {
                match permission.as_str() {
                    "publish" => publish = true,
                    "subscribe" => subscribe = true,
                    other => return Err(format!("unknown permission {other}")),
                }
            }
            let topic = compile("topic", &authorization.topic)?;
            let channels = authorization
                .channels
                .iter()
                .map(|channel| compile("channel", channel))
                .collect::<Result<_, _>>()?;
            authorizations.push(Authorization { topic, channels, publish, subscribe });
        }
        if reply.ttl <= 0 {
            return Err(format!("invalid TTL {} (must be >0)", reply.ttl));
        }
        let ttl_ns = reply.ttl.saturating_mul(1_000_000_000);
        Ok(Self {
            identity: reply.identity,
            identity_url: reply.identity_url,
            authorizations,
            expires_ns: now_ns.saturating_add(ttl_ns),
        })
    }
}

impl AuthServers {
    /// The servers of `--auth-http-address`, or `None` when auth is off.
    pub(crate) fn new(options: &Options, http: &reqwest::Client) -> Option<Self> {
        if options.auth_http_addresses.is_empty() {
            return None;
        }
        let http = http.clone();
        let endpoints = options
            .auth_http_addresses
            .iter()
            .map(|address| {
                if address.contains("://") {
                    address.clone()
                } else {
                    format!("http://{address}/auth")
                }
            })
            .collect();
        Some(Self { endpoints, post: options.auth_http_request_method == "post", http })
    }

    /// Asks the servers in turn, from a random one, until one gives a valid answer. The error
    /// names every server that failed and why (for the log; clients are only told
    /// "AUTH failed").
    pub(crate) async fn query(
        &self,
        query: &AuthQuery<'_>,
        now_ns: i64,
    ) -> Result<AuthState, String> {
        let start = fastrand::usize(..self.endpoints.len());
        let mut errors: Vec<String> = Vec::new();
        for i in 0..self.endpoints.len() {
            let endpoint = &self.endpoints[(start + i) % self.endpoints.len()];
            match self.query_one(endpoint, query).await {
                Ok(reply) => match AuthState::from_reply(reply, now_ns) {
                    Ok(state) => return Ok(state),
                    Err(e) => errors.push(format!("failed to auth against {endpoint} - {e}")),
                },
                Err(e) => errors.push(format!("failed to auth against {endpoint} - {e}")),
            }
        }
        Err(errors.join("; "))
    }

    async fn query_one(&self, endpoint: &str, query: &AuthQuery<'_>) -> Result<Reply, String> {
        let tls = if query.tls { "true" } else { "false" };
        // Go's url.Values: keys in sorted order.
        let params = [
            ("common_name", query.common_name),
            ("remote_ip", query.remote_ip.as_str()),
            ("secret", query.secret),
            ("tls", tls),
        ];
        let mut endpoint = endpoint.to_owned();
        // A server that wants HTTPS says so with a 403 naming its port; nsqd follows once.
        for _ in 0..2 {
            let request = if self.post {
                let body: serde_json::Map<String, serde_json::Value> =
                    params.iter().map(|(k, v)| ((*k).to_owned(), serde_json::json!([v]))).collect();
                self.http
                    .post(&endpoint)
                    .header("Content-Type", "application/json")
                    .body(serde_json::Value::Object(body).to_string())
            } else {
                let encoded =
                    form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
                self.http.get(format!("{endpoint}?{encoded}"))
            };
            let (status, body) = send_v1(request).await?;
            if status == StatusCode::FORBIDDEN && !endpoint.starts_with("https") {
                endpoint = https_endpoint(&endpoint, &body)?;
                continue;
            }
            if status != StatusCode::OK {
                return Err(unexpected_reply(status, &body));
            }
            return serde_json::from_slice(&body).map_err(|e| e.to_string());
        }
        Err("redirected to HTTPS twice".to_owned())
    }
}

/// The endpoint again over HTTPS, on the port a 403 reply names.
fn https_endpoint(endpoint: &str, body: &[u8]) -> Result<String, String> {
    let forbidden: Forbidden = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let url = reqwest::Url::parse(endpoint).map_err(|e| e.to_string())?;
    let host = url.host_str().ok_or_else(|| format!("no host in {endpoint}"))?;
    let mut https = url.clone();
    https.set_scheme("https").map_err(|()| format!("cannot use https for {endpoint}"))?;
    https.set_host(Some(host)).map_err(|e| e.to_string())?;
    https.set_port(Some(forbidden.https_port)).map_err(|()| format!("bad port in {endpoint}"))?;
    Ok(https.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn state(json: &str) -> Result<AuthState, String> {
        AuthState::from_reply(serde_json::from_str(json).unwrap(), 0)
    }

    #[test]
    fn authorizations_match_as_nsqd_matches_them() {
        let state = state(
            r#"{"ttl":60,"identity":"me","authorizations":[
                {"topic":"^orders","channels":["archive","^$"],"permissions":["publish","subscribe"]},
                {"topic":"logs","channels":[".*"],"permissions":["subscribe"]}]}"#,
        )
        .unwrap();
        assert!(state.is_allowed("orders", ""), "publish needs a channel pattern matching \"\"");
        assert!(state.is_allowed("orders-eu", "archive-2"), "patterns are not anchored");
        assert!(!state.is_allowed("old-orders", "archive"));
        assert!(state.is_allowed("app-logs", "anything"));
        assert!(!state.is_allowed("app-logs", ""), "logs may not be published");
        assert_eq!(state.permission_count(), 2);
        assert!(!state.is_expired(60_000_000_000) && state.is_expired(60_000_000_001));
    }

    #[test]
    fn bad_replies_are_refused_with_nsqds_reasons() {
        let error = |json: &str| state(json).unwrap_err();
        assert_eq!(error(r#"{"ttl":0}"#), "invalid TTL 0 (must be >0)");
        assert_eq!(
            error(r#"{"ttl":1,"authorizations":[{"topic":"t","permissions":["read"]}]}"#),
            "unknown permission read"
        );
        assert!(
            error(r#"{"ttl":1,"authorizations":[{"topic":"(","channels":[]}]}"#)
                .starts_with("unable to compile topic \"(\"")
        );
        assert!(
            error(r#"{"ttl":1,"authorizations":[{"topic":"t","channels":["["]}]}"#)
                .starts_with("unable to compile channel \"[\"")
        );
        assert!(!state(r#"{"ttl":5}"#).unwrap().has_authorizations());
    }

    #[test]
    fn a_403_naming_a_port_moves_to_https() {
        let moved = https_endpoint("http://auth.local:4181/auth?x=1", br#"{"https_port":4443}"#);
        assert_eq!(moved.unwrap(), "https://auth.local:4443/auth?x=1");
        assert!(https_endpoint("http://a/auth", b"nope").is_err());
    }
}
