//! The V2 commands, one handler each. The checks of state, parameters and body, in nsqd's order
//! (which error a client sees first is part of the protocol) with nsqd's error texts, are the
//! pure functions of [`super::parse`]; each handler reads what they allow, then makes one
//! engine call.

use std::sync::Arc;
use std::time::Duration;

use engine::{EngineError, MessageError};
use protocol::compression::Compression;
use protocol::frame::FrameType;
use protocol::identify::{AuthResponse, IdentifyResponse};
use protocol::{ErrorCode, MESSAGE_ID_LEN, ProtocolError};

use super::connection::{Connection, Failure};
use super::parse::{
    self, ClientState, Limits, PubKind, Request, checked_body_len, decode_identify,
    message_body_len, negotiate, parse_command,
};
use super::pump::PumpEvent;
use super::transport;
use crate::auth::{AuthQuery, AuthState};
use crate::clients::{STATE_CLOSING, STATE_SUBSCRIBED, Subscription};
use crate::options::{NSQ_VERSION, TlsRequired};

type Reply = Result<Option<Vec<u8>>, Failure>;

fn ok() -> Reply {
    Ok(Some(protocol::OK.to_vec()))
}

fn error(code: ErrorCode, text: impl Into<String>) -> Failure {
    Failure::Protocol(ProtocolError::new(code, text))
}

fn invalid(text: impl Into<String>) -> Failure {
    error(ErrorCode::Invalid, text)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The reason nsqd gives when a publish or subscribe fails.
fn engine_reason(error: &EngineError) -> String {
    match error {
        EngineError::Exiting(_) => "exiting".to_owned(),
        other => other.to_string(),
    }
}

impl Connection {
    pub(crate) async fn exec(&mut self, params: &[&[u8]]) -> Reply {
        let connection = parse::Connection {
            state: match self.client.state() {
                STATE_SUBSCRIBED => ClientState::Subscribed,
                STATE_CLOSING => ClientState::Closing,
                _ => ClientState::Init,
            },
            tls_pending: self.nsqd.tls_required != TlsRequired::No && self.tls.is_none(),
            heartbeats: self.settings.heartbeat_interval.is_some(),
            has_consumer: self.consumer.is_some(),
        };
        let limits = Limits::from_options(&self.nsqd.options);
        match parse_command(params, &connection, &limits)? {
            Request::Identify => self.identify(&limits).await,
            Request::Fin(id) => self.fin(id),
            Request::Rdy(count) => self.rdy(count),
            Request::RdyIgnored => {
                tracing::info!(
                    "PROTOCOL(V2): [{}] ignoring RDY after CLS in state ClientStateV2Closing",
                    self.client.remote
                );
                Ok(None)
            }
            Request::Req { id, delay, clamped_from } => {
                if let Some(requested) = clamped_from {
                    tracing::info!(
                        "PROTOCOL(V2): [{}] REQ timeout {requested:?} out of range 0-{delay:?}. Setting to {delay:?}",
                        self.client.remote
                    );
                }
                self.req(id, delay)
            }
            Request::Pub { kind, topic, defer } => self.publish(kind, topic, defer, &limits).await,
            Request::Mpub { topic } => self.mpub(topic, &limits).await,
            Request::Nop => Ok(None),
            Request::Touch(id) => self.touch(id),
            Request::Sub { topic, channel } => self.sub(topic, channel).await,
            Request::Cls => self.cls(),
            Request::Auth => self.auth().await,
        }
    }

    /// Reads a body whose size must be in `1..=max`; `too_big` is checked first for IDENTIFY
    /// and AUTH, as nsqd does.
    async fn read_checked_body(
        &mut self,
        code: ErrorCode,
        what: &str,
        max: u64,
        too_big_first: bool,
    ) -> Result<Vec<u8>, Failure> {
        let size = match self.read_size().await {
            Ok(size) => size,
            Err(_) => return Err(error(code, format!("{what} failed to read body size"))),
        };
        let size = checked_body_len(size, code, what, max, too_big_first)?;
        self.read_body(size).await.map_err(|_| error(code, format!("{what} failed to read body")))
    }

    async fn identify(&mut self, limits: &Limits) -> Reply {
        let max = limits.max_body_size;
        let body = self.read_checked_body(ErrorCode::BadBody, "IDENTIFY", max, true).await?;
        let request = decode_identify(&body)?;
        tracing::info!("[{}] IDENTIFY: {request:?}", self.client.remote);
        {
            let mut meta = self.client.meta();
            meta.client_id.clone_from(&request.client_id);
            meta.hostname.clone_from(&request.hostname);
            meta.user_agent.clone_from(&request.user_agent);
            meta.topology_region.clone_from(&request.topology_region);
            meta.topology_zone.clone_from(&request.topology_zone);
        }
        let settings = negotiate(&request, self.settings, limits)
            .map_err(|e| error(ErrorCode::BadBody, format!("IDENTIFY {e}")))?;
        self.settings = settings;
        self.client.meta().sample_rate = settings.sample_rate;
        self.writer
            .lock()
            .await
            .configure(settings.output_buffer_size, settings.heartbeat_interval);
        if !self.identified {
            self.identified = true;
            let _ = self.events.send(PumpEvent::Identify(settings));
        }
        if !request.feature_negotiation {
            return ok();
        }
        let options = &self.nsqd.options;
        let tls = self.nsqd.tls.clone().filter(|_| request.tls_v1);
        let deflate = options.deflate && request.deflate;
        let snappy = options.snappy && request.snappy;
        let requested_level =
            if deflate && request.deflate_level > 0 { request.deflate_level } else { 6 };
        let deflate_level = requested_level.min(options.max_deflate_level);
        if deflate && snappy {
            return Err(error(
                ErrorCode::IdentifyFailed,
                "cannot enable both deflate and snappy compression",
            ));
        }
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let response = IdentifyResponse {
            max_rdy_count: i64::try_from(options.max_rdy_count).unwrap_or(i64::MAX),
            version: NSQ_VERSION.to_owned(),
            max_msg_timeout: millis(options.max_msg_timeout),
            msg_timeout: millis(settings.msg_timeout),
            tls_v1: tls.is_some(),
            deflate,
            deflate_level,
            max_deflate_level: options.max_deflate_level,
            snappy,
            sample_rate: settings.sample_rate,
            auth_required: self.nsqd.auth.is_some(),
            output_buffer_size: i64::try_from(settings.output_buffer_size).unwrap_or(i64::MAX),
            output_buffer_timeout: settings.output_buffer_timeout.map_or(0, millis),
            topology_region: String::new(),
            topology_zone: String::new(),
        };
        let failed = |e: &dyn std::fmt::Display| {
            error(ErrorCode::IdentifyFailed, format!("IDENTIFY failed {e}"))
        };
        let json = serde_json::to_vec(&response).map_err(|e| failed(&e))?;
        let compression = if snappy {
            Some(Compression::Snappy)
        } else if deflate {
            Some(Compression::Deflate { level: u32::try_from(deflate_level).unwrap_or(6) })
        } else {
            None
        };
        // The JSON goes out as it is; each upgrade is then confirmed by an OK sent through it.
        // The writer stays locked throughout, so no heartbeat slips in between.
        let writer = Arc::clone(&self.writer);
        let mut writer = writer.lock().await;
        writer.send(FrameType::Response, &json).await.map_err(|e| failed(&e))?;
        let remote = self.client.remote;
        if let Some(config) = tls {
            tracing::info!("PROTOCOL(V2): [{remote}] upgrading connection to TLS");
            let reader = std::mem::replace(&mut self.reader, transport::detached_reader());
            let (reader, io, session) = transport::upgrade_tls(config, reader, writer.take_io())
                .await
                .map_err(|e| failed(&e))?;
            self.reader = reader;
            writer.set_io(io);
            self.client.meta().tls = Some(session.clone());
            self.tls = Some(session);
            writer.send(FrameType::Response, protocol::OK).await.map_err(|e| failed(&e))?;
        }
        if let Some(compression) = compression {
            match compression {
                Compression::Deflate { level } => tracing::info!(
                    "PROTOCOL(V2): [{remote}] upgrading connection to deflate (level {level})"
                ),
                Compression::Snappy => {
                    tracing::info!("PROTOCOL(V2): [{remote}] upgrading connection to snappy");
                }
            }
            let reader = std::mem::replace(&mut self.reader, transport::detached_reader());
            self.reader = transport::decompressing(reader, compression);
            writer.compress(compression);
            self.client.meta().compression = Some(compression);
            writer.send(FrameType::Response, protocol::OK).await.map_err(|e| failed(&e))?;
        }
        Ok(None)
    }

    async fn auth(&mut self) -> Reply {
        let max = self.nsqd.options.max_body_size;
        let body = self.read_checked_body(ErrorCode::BadBody, "AUTH", max, true).await?;
        if self.auth.as_ref().is_some_and(AuthState::has_authorizations) {
            return Err(invalid("AUTH already set"));
        }
        if self.nsqd.auth.is_none() {
            return Err(error(ErrorCode::AuthDisabled, "AUTH disabled"));
        }
        self.auth_secret = text(&body);
        self.query_auth().await?;
        let Some(state) = self.auth.as_ref().filter(|state| state.has_authorizations()) else {
            return Err(error(ErrorCode::Unauthorized, "AUTH no authorizations found"));
        };
        let response = AuthResponse {
            identity: state.identity.clone(),
            identity_url: state.identity_url.clone(),
            permission_count: i64::try_from(state.permission_count()).unwrap_or(i64::MAX),
        };
        let json = serde_json::to_vec(&response)
            .map_err(|e| error(ErrorCode::AuthError, format!("AUTH error {e}")))?;
        Ok(Some(json))
    }

    /// Asks the auth servers about this client's secret, keeping the answer. Why it failed is
    /// logged, not told to the client.
    async fn query_auth(&mut self) -> Result<(), Failure> {
        let Some(servers) = &self.nsqd.auth else { return Ok(()) };
        let query = AuthQuery {
            remote_ip: self.client.remote.ip().to_string(),
            tls: self.tls.is_some(),
            common_name: self.tls.as_ref().map_or("", |session| session.common_name.as_str()),
            secret: &self.auth_secret,
        };
        let now = self.nsqd.engine.clock().now_ns();
        match servers.query(&query, now).await {
            Ok(state) => {
                let mut meta = self.client.meta();
                meta.authed = state.has_authorizations();
                meta.auth_identity.clone_from(&state.identity);
                meta.auth_identity_url.clone_from(&state.identity_url);
                drop(meta);
                self.auth = Some(state);
                Ok(())
            }
            Err(reason) => {
                tracing::warn!("PROTOCOL(V2): [{}] AUTH failed {reason}", self.client.remote);
                Err(error(ErrorCode::AuthFailed, "AUTH failed"))
            }
        }
    }

    /// nsqd's `CheckAuth`: with auth on, `command` on `topic` (and `channel`, empty for a
    /// publish) needs an AUTH whose answer allows it, asked again once it has expired.
    async fn check_auth(
        &mut self,
        command: &str,
        topic: &str,
        channel: &str,
    ) -> Result<(), Failure> {
        if self.nsqd.auth.is_none() {
            return Ok(());
        }
        let Some(state) = self.auth.as_ref().filter(|state| state.has_authorizations()) else {
            return Err(error(ErrorCode::AuthFirst, format!("AUTH required before {command}")));
        };
        if state.is_expired(self.nsqd.engine.clock().now_ns()) {
            self.query_auth().await?;
        }
        if self.auth.as_ref().is_some_and(|state| state.is_allowed(topic, channel)) {
            Ok(())
        } else {
            Err(error(
                ErrorCode::Unauthorized,
                format!("AUTH failed for {command} on {topic:?} {channel:?}"),
            ))
        }
    }

    async fn sub(&mut self, topic_name: String, channel_name: String) -> Reply {
        self.check_auth("SUB", &topic_name, &channel_name).await?;
        let sub_failed = |e: &EngineError| {
            error(ErrorCode::SubFailed, format!("SUB failed {}", engine_reason(e)))
        };
        // An ephemeral channel or topic may be going away as its last consumer leaves: like
        // nsqd, try once more a little later before giving up.
        let mut attempt = 0;
        let consumer = loop {
            attempt += 1;
            let engine = Arc::clone(&self.nsqd.engine);
            let (topic, channel) = (topic_name.clone(), channel_name.clone());
            let max_consumers = self.nsqd.options.max_channel_consumers;
            let msg_timeout = self.settings.msg_timeout;
            let result = crate::nsqd::blocking(move || {
                let channel = engine.topic(&topic)?.channel(&channel)?;
                if max_consumers > 0 && channel.stats().client_count >= max_consumers {
                    return Ok(Err(format!(
                        "consumers for {topic}:{} exceeds limit of {max_consumers}",
                        channel.name()
                    )));
                }
                Ok(Ok(channel.subscribe(Some(msg_timeout))?))
            })
            .await;
            match result {
                Ok(Ok(consumer)) => break consumer,
                Ok(Err(limit)) => {
                    return Err(error(ErrorCode::SubFailed, format!("SUB failed {limit}")));
                }
                Err(EngineError::Exiting(_)) if attempt < 2 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(EngineError::Exiting(_)) => {
                    return Err(error(ErrorCode::SubFailed, "SUB failed to deleted topic/channel"));
                }
                Err(e) => return Err(sub_failed(&e)),
            }
        };
        let consumer = Arc::new(consumer);
        self.client.meta().subscription = Some(Subscription {
            topic: topic_name,
            channel: channel_name,
            consumer_id: consumer.id(),
        });
        self.client.set_state(STATE_SUBSCRIBED);
        self.consumer = Some(Arc::clone(&consumer));
        let _ = self.events.send(PumpEvent::Subscribe(consumer));
        ok()
    }

    fn rdy(&mut self, count: u64) -> Reply {
        if let Some(consumer) = &self.consumer {
            consumer.set_ready(count);
        }
        self.wake.notify_one();
        Ok(None)
    }

    /// The subscribed consumer, for FIN, REQ or TOUCH (their checks made sure there is one).
    fn subscribed(&self, name: &str) -> Result<Arc<engine::Consumer>, Failure> {
        self.consumer.clone().ok_or_else(|| invalid(format!("cannot {name} in current state")))
    }

    pub(crate) fn message_failed(
        code: ErrorCode,
        name: &str,
        id: &[u8],
        e: MessageError,
    ) -> ProtocolError {
        ProtocolError::new(code, format!("{name} {} failed {e}", text(id)))
    }

    /// FIN: queued, and applied with the FINs right behind it (see `Connection::fins`).
    fn fin(&mut self, id: &[u8; MESSAGE_ID_LEN]) -> Reply {
        self.subscribed("FIN")?;
        self.fins.push(*id);
        Ok(None)
    }

    fn req(&mut self, id: &[u8; MESSAGE_ID_LEN], delay: Duration) -> Reply {
        self.subscribed("REQ")?
            .requeue(id, delay)
            .map_err(|e| Self::message_failed(ErrorCode::ReqFailed, "REQ", id, e))?;
        self.wake.notify_one();
        Ok(None)
    }

    fn touch(&mut self, id: &[u8; MESSAGE_ID_LEN]) -> Reply {
        self.subscribed("TOUCH")?
            .touch(id)
            .map_err(|e| Self::message_failed(ErrorCode::TouchFailed, "TOUCH", id, e))?;
        Ok(None)
    }

    fn cls(&mut self) -> Reply {
        if let Some(consumer) = &self.consumer {
            consumer.set_ready(0);
        }
        self.client.set_state(STATE_CLOSING);
        self.wake.notify_one();
        Ok(Some(protocol::CLOSE_WAIT.to_vec()))
    }

    async fn publish(
        &mut self,
        kind: PubKind,
        topic_name: String,
        defer: Duration,
        limits: &Limits,
    ) -> Reply {
        let name = kind.name();
        let bad = |t: String| error(ErrorCode::BadMessage, t);
        let size = self
            .read_size()
            .await
            .map_err(|_| bad(format!("{name} failed to read message body size")))?;
        let size = message_body_len(kind, size, limits)?;
        let body = self
            .read_body(size)
            .await
            .map_err(|_| bad(format!("{name} failed to read message body")))?;
        self.check_auth(name, &topic_name, "").await?;
        let failed = |e: EngineError| {
            error(kind.failed_code(), format!("{name} failed {}", engine_reason(&e)))
        };
        let topic = self.nsqd.topic(&topic_name).await.map_err(failed)?;
        let whole = 0..body.len();
        self.nsqd.publish(topic, body, vec![whole], defer).await.map_err(failed)?;
        self.client.published(&topic_name, 1);
        ok()
    }

    async fn mpub(&mut self, topic_name: String, limits: &Limits) -> Reply {
        self.check_auth("MPUB", &topic_name, "").await?;
        let (max_body, max_msg) = (limits.max_body_size, limits.max_msg_size);
        let body = self.read_checked_body(ErrorCode::BadBody, "MPUB", max_body, false).await?;
        let ranges = protocol::mpub::decode_mpub_ranges(&body, max_msg, max_body)?;
        let count = ranges.len() as u64;
        let failed = |e: EngineError| {
            error(ErrorCode::MpubFailed, format!("MPUB failed {}", engine_reason(&e)))
        };
        let topic = self.nsqd.topic(&topic_name).await.map_err(failed)?;
        self.nsqd.publish(topic, body, ranges, Duration::ZERO).await.map_err(failed)?;
        self.client.published(&topic_name, count);
        ok()
    }
}
