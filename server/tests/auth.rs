//! AUTH (NSQ.md §2.9) against a small auth HTTP server that the test runs on loopback and
//! scripts: which secrets it knows, what it answers, and what nsqd asked it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri};
use common::pki::Pki;
use common::{Client, TestServer};
use protocol::command::Command;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// One request nsqd made.
#[derive(Debug, Clone)]
struct Asked {
    method: Method,
    path: String,
    params: BTreeMap<String, String>,
}

#[derive(Default)]
struct Script {
    /// secret → (status, body); unknown secrets get 401.
    replies: HashMap<String, (u16, String)>,
    asked: Vec<Asked>,
}

/// The auth server: answers GET and POST on any path from its script.
struct AuthServer {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    method: Method,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    // GET carries the parameters in the query; POST as JSON arrays of one value (Go's
    // url.Values).
    let params = if method == Method::POST {
        let posted: BTreeMap<String, Vec<String>> = serde_json::from_slice(&body).unwrap();
        posted.into_iter().map(|(k, mut v)| (k, v.remove(0))).collect()
    } else {
        query
    };
    let mut script = script.lock().unwrap();
    let secret = params.get("secret").cloned().unwrap_or_default();
    script.asked.push(Asked { method, path: uri.path().to_owned(), params });
    let (status, body) = script.replies.get(&secret).cloned().unwrap_or((401, "no".to_owned()));
    (StatusCode::from_u16(status).unwrap(), body)
}

impl AuthServer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(Script::default()));
        let app = Router::new().fallback(answer).with_state(Arc::clone(&script));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
                .unwrap();
        });
        Self { addr, script, stop, task }
    }

    fn reply(&self, secret: &str, status: u16, body: Value) {
        self.script.lock().unwrap().replies.insert(secret.to_owned(), (status, body.to_string()));
    }

    fn asked(&self) -> Vec<Asked> {
        self.script.lock().unwrap().asked.clone()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// Alice may publish to topics starting "orders" and subscribe to them on "archive*".
fn alice(ttl: i64) -> Value {
    json!({
        "ttl": ttl,
        "identity": "alice",
        "identity_url": "https://people.example/alice",
        "authorizations": [
            {"topic": "^orders", "channels": [".*"], "permissions": ["publish"]},
            {"topic": "^orders", "channels": ["^archive"], "permissions": ["subscribe"]},
        ],
    })
}

async fn authed(server: &TestServer, secret: &str) -> (Client, Value) {
    let mut client = server.connect().await;
    client.command(Command::Auth(secret.as_bytes())).await;
    let reply = serde_json::from_slice(&client.response().await).unwrap();
    (client, reply)
}

#[tokio::test]
async fn auth_errors_and_permissions_are_nsqds() {
    // Goal: the whole AUTH flow of NSQ.md §2.9 with nsqd's codes and texts: commands before
    // AUTH, an unknown secret, an answer without authorizations, a good answer (its reply
    // and what the auth server was asked), AUTH twice, and the checks of PUB, MPUB, DPUB
    // and SUB against the authorizations, with /stats showing the identity.
    let auth = AuthServer::start().await;
    auth.reply("alice-secret", 200, alice(3600));
    auth.reply("nobody", 200, json!({"ttl": 60, "authorizations": []}));
    let flag = format!("--auth-http-address={}", auth.addr);
    let server = TestServer::start_with(&[&flag]).await;

    let mut client = server.connect().await;
    let answer = client.identify(r#"{"feature_negotiation":true}"#).await;
    assert_eq!(serde_json::from_slice::<Value>(&answer).unwrap()["auth_required"], true);
    client.command(Command::Pub { topic: "orders", body: b"x" }).await;
    client.expect_fatal("E_AUTH_FIRST AUTH required before PUB").await;
    let mut client = server.connect().await;
    client.command(Command::Sub { topic: "orders", channel: "archive" }).await;
    client.expect_fatal("E_AUTH_FIRST AUTH required before SUB").await;

    let mut client = server.connect().await;
    client.command(Command::Auth(b"wrong")).await;
    client.expect_fatal("E_AUTH_FAILED AUTH failed").await;
    let mut client = server.connect().await;
    client.command(Command::Auth(b"nobody")).await;
    client.expect_fatal("E_UNAUTHORIZED AUTH no authorizations found").await;

    let (mut client, reply) = authed(&server, "alice-secret").await;
    let expected = json!({
        "identity": "alice",
        "identity_url": "https://people.example/alice",
        "permission_count": 2,
    });
    assert_eq!(reply, expected);
    let last = auth.asked().pop().unwrap();
    assert_eq!((last.method, last.path.as_str()), (Method::GET, "/auth"));
    let params: Vec<(&str, &str)> =
        last.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let asked = [
        ("common_name", ""),
        ("remote_ip", "127.0.0.1"),
        ("secret", "alice-secret"),
        ("tls", "false"),
    ];
    assert_eq!(params, asked);

    client.command(Command::Pub { topic: "orders", body: b"1" }).await;
    client.expect_ok().await;
    client.command(Command::Mpub { topic: "orders-eu", bodies: &[b"2", b"3"] }).await;
    client.expect_ok().await;
    client.command(Command::Dpub { topic: "orders", defer_ms: 10, body: b"4" }).await;
    client.expect_ok().await;
    let stats = server.http("GET", "/stats?format=json", b"").await.json();
    let me = &stats["producers"][0];
    assert_eq!((&me["authed"], &me["auth_identity"]), (&json!(true), &json!("alice")));
    assert_eq!(me["auth_identity_url"], "https://people.example/alice");
    client.command(Command::Auth(b"alice-secret")).await;
    client.expect_fatal("E_INVALID AUTH already set").await;

    let (mut client, _) = authed(&server, "alice-secret").await;
    client.command(Command::Pub { topic: "payroll", body: b"x" }).await;
    client.expect_fatal(r#"E_UNAUTHORIZED AUTH failed for PUB on "payroll" """#).await;
    let (mut client, _) = authed(&server, "alice-secret").await;
    client.command(Command::Mpub { topic: "payroll", bodies: &[b"x"] }).await;
    client.expect_fatal(r#"E_UNAUTHORIZED AUTH failed for MPUB on "payroll" """#).await;
    let (mut client, _) = authed(&server, "alice-secret").await;
    client.command(Command::Sub { topic: "orders", channel: "billing" }).await;
    client.expect_fatal(r#"E_UNAUTHORIZED AUTH failed for SUB on "orders" "billing""#).await;
    let (mut client, _) = authed(&server, "alice-secret").await;
    client.command(Command::Sub { topic: "orders", channel: "archive-1" }).await;
    client.expect_ok().await;
    client.command(Command::Rdy(1)).await;
    assert_eq!(client.message().await.body, "1");

    server.stop().await;
    auth.stop().await;
}

#[tokio::test]
async fn expired_authorizations_are_asked_for_again() {
    // Goal: an answer holds for its ttl (on the engine's clock); the next publish after it
    // asks again, and then obeys the new answer or fails with E_AUTH_FAILED.
    let auth = AuthServer::start().await;
    auth.reply("s", 200, alice(10));
    let flag = format!("--auth-http-address={}", auth.addr);
    let server = TestServer::start_with(&[&flag]).await;
    let (mut client, _) = authed(&server, "s").await;
    client.command(Command::Pub { topic: "orders", body: b"1" }).await;
    client.expect_ok().await;
    server.advance(Duration::from_secs(10));
    client.command(Command::Pub { topic: "orders", body: b"2" }).await;
    client.expect_ok().await;
    assert_eq!(auth.asked().len(), 1, "not expired at exactly ttl");

    server.advance(Duration::from_secs(1));
    auth.reply(
        "s",
        200,
        json!({"ttl": 10, "authorizations": [
        {"topic": "^logs$", "channels": [""], "permissions": ["publish"]}]}),
    );
    client.command(Command::Pub { topic: "logs", body: b"3" }).await;
    client.expect_ok().await;
    assert_eq!(auth.asked().len(), 2);
    client.command(Command::Pub { topic: "orders", body: b"4" }).await;
    client.expect_fatal(r#"E_UNAUTHORIZED AUTH failed for PUB on "orders" """#).await;

    let (mut client, _) = authed(&server, "s").await;
    server.advance(Duration::from_secs(11));
    auth.reply("s", 500, json!({"message": "down"}));
    client.command(Command::Pub { topic: "logs", body: b"5" }).await;
    client.expect_fatal("E_AUTH_FAILED AUTH failed").await;
    server.stop().await;
    auth.stop().await;
}

#[tokio::test]
async fn auth_over_tls_names_the_client_certificate() {
    // Goal: after a TLS upgrade with a client certificate, the auth server is told tls=true
    // and the certificate's common name.
    let pki = Pki::new();
    let auth = AuthServer::start().await;
    auth.reply("s", 200, alice(60));
    let mut flags = pki.server_flags();
    flags.push(format!("--auth-http-address={}", auth.addr));
    flags.push("--tls-client-auth-policy=require-verify".to_owned());
    flags.push(format!("--tls-root-ca-file={}", pki.ca_file.display()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = TestServer::start_with(&flags).await;
    let mut client = server.connect().await;
    let connector = pki.connector(Some(pki.client("alice.example")));
    client.negotiate(r#"{"feature_negotiation":true,"tls_v1":true}"#, Some(&connector)).await;
    client.command(Command::Auth(b"s")).await;
    let reply: Value = serde_json::from_slice(&client.response().await).unwrap();
    assert_eq!(reply["identity"], "alice");
    let asked = auth.asked().pop().unwrap().params;
    assert_eq!((asked["tls"].as_str(), asked["common_name"].as_str()), ("true", "alice.example"));
    server.stop().await;
    auth.stop().await;
}

#[tokio::test]
async fn post_to_a_full_url_and_fall_back_across_servers() {
    // Goal: --auth-http-request-method=post sends the parameters as JSON arrays to a full
    // URL given as-is; with several servers, one that is down is skipped. Method: a dead
    // address (a port just closed) listed first and last; every AUTH must still succeed,
    // whichever server nsqd starts from.
    let auth = AuthServer::start().await;
    auth.reply("s", 200, alice(60));
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let flags = [
        format!("--auth-http-address={dead}"),
        format!("--auth-http-address=http://{}/v2/check", auth.addr),
        format!("--auth-http-address={dead}"),
        "--auth-http-request-method=post".to_owned(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = TestServer::start_with(&flags).await;
    for _ in 0..6 {
        let (_client, reply) = authed(&server, "s").await;
        assert_eq!(reply["permission_count"], 2);
    }
    let asked = auth.asked();
    assert_eq!(asked.len(), 6);
    assert!(asked.iter().all(|a| a.method == Method::POST && a.path == "/v2/check"));
    assert_eq!(asked[0].params["secret"], "s");
    server.stop().await;
    auth.stop().await;
}
