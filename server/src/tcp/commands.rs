//! The V2 commands, one handler each, checking state, parameters and body in nsqd's order
//! (which error a client sees first is part of the protocol) with nsqd's error texts. Each
//! handler then makes one engine call.

use std::sync::Arc;
use std::time::Duration;

use engine::{EngineError, MessageError};
use protocol::command::{message_id, parse_base10};
use protocol::compression::Compression;
use protocol::frame::FrameType;
use protocol::identify::{AuthResponse, IdentifyRequest, IdentifyResponse};
use protocol::{ErrorCode, ProtocolError};

use super::connection::{Connection, Failure};
use super::pump::{PumpEvent, Settings};
use super::transport;
use crate::auth::{AuthQuery, AuthState};
use crate::clients::{STATE_CLOSING, STATE_INIT, STATE_SUBSCRIBED, Subscription};
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

/// A topic or channel name parameter, valid by NSQ's rules, or `<code> <what> name "x" is not
/// valid`.
fn valid_name(param: &[u8], code: ErrorCode, what: &str) -> Result<String, Failure> {
    let name = text(param);
    if engine::names::is_valid_name(&name) {
        Ok(name)
    } else {
        Err(error(code, format!("{what} name {name:?} is not valid")))
    }
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
        let name = params.first().copied().unwrap_or_default();
        if name != b"IDENTIFY" && self.nsqd.tls_required != TlsRequired::No && self.tls.is_none() {
            return Err(invalid(format!("cannot {} in current state (TLS required)", text(name))));
        }
        match name {
            b"IDENTIFY" => self.identify().await,
            b"FIN" => self.fin(params),
            b"RDY" => self.rdy(params),
            b"REQ" => self.req(params),
            b"PUB" => self.publish(params, PubKind::Pub).await,
            b"MPUB" => self.mpub(params).await,
            b"DPUB" => self.publish(params, PubKind::Dpub).await,
            b"NOP" => Ok(None),
            b"TOUCH" => self.touch(params),
            b"SUB" => self.sub(params).await,
            b"CLS" => self.cls(),
            b"AUTH" => self.auth(params).await,
            other => Err(invalid(format!("invalid command {}", text(other)))),
        }
    }

    fn state(&self) -> i32 {
        self.client.state()
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
        let too_big = u64::try_from(size).is_ok_and(|s| s > max);
        let (empty_text, big_text) = (
            format!("{what} invalid body size {size}"),
            format!("{what} body too big {size} > {max}"),
        );
        if too_big_first && too_big {
            return Err(error(code, big_text));
        }
        if size <= 0 {
            return Err(error(code, empty_text));
        }
        if too_big {
            return Err(error(code, big_text));
        }
        let size = usize::try_from(size).unwrap_or(0);
        self.read_body(size).await.map_err(|_| error(code, format!("{what} failed to read body")))
    }

    async fn identify(&mut self) -> Reply {
        if self.state() != STATE_INIT {
            return Err(invalid("cannot IDENTIFY in current state"));
        }
        let max = self.nsqd.options.max_body_size;
        let body = self.read_checked_body(ErrorCode::BadBody, "IDENTIFY", max, true).await?;
        let request: IdentifyRequest = serde_json::from_slice(&body)
            .map_err(|_| error(ErrorCode::BadBody, "IDENTIFY failed to decode JSON body"))?;
        tracing::info!("[{}] IDENTIFY: {request:?}", self.client.remote);
        {
            let mut meta = self.client.meta();
            meta.client_id.clone_from(&request.client_id);
            meta.hostname.clone_from(&request.hostname);
            meta.user_agent.clone_from(&request.user_agent);
            meta.topology_region.clone_from(&request.topology_region);
            meta.topology_zone.clone_from(&request.topology_zone);
        }
        let settings = self
            .negotiate(&request)
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

    /// The settings an IDENTIFY asks for, checked against the server's bounds in nsqd's order.
    fn negotiate(&self, request: &IdentifyRequest) -> Result<Settings, String> {
        let options = &self.nsqd.options;
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
        let mut settings = self.settings;
        match request.heartbeat_interval {
            -1 => settings.heartbeat_interval = None,
            0 => {}
            v if v >= 1000 && v <= millis(options.max_heartbeat_interval) => {
                settings.heartbeat_interval = Some(ms(v));
            }
            v => return Err(format!("heartbeat interval ({v}) is invalid")),
        }
        match request.output_buffer_timeout {
            -1 => settings.output_buffer_timeout = None,
            0 => {}
            v if v >= millis(options.min_output_buffer_timeout)
                && v <= millis(options.max_output_buffer_timeout) =>
            {
                settings.output_buffer_timeout = Some(ms(v));
            }
            v => return Err(format!("output buffer timeout ({v}) is invalid")),
        }
        match request.output_buffer_size {
            -1 => {
                settings.output_buffer_size = 1;
                settings.output_buffer_timeout = None;
            }
            0 => {}
            v if v >= 64 && u64::try_from(v).is_ok_and(|v| v <= options.max_output_buffer_size) => {
                settings.output_buffer_size = usize::try_from(v).unwrap_or(usize::MAX);
            }
            v => return Err(format!("output buffer size ({v}) is invalid")),
        }
        if !(0..=99).contains(&request.sample_rate) {
            return Err(format!("sample rate ({}) is invalid", request.sample_rate));
        }
        settings.sample_rate = request.sample_rate;
        match request.msg_timeout {
            0 => {}
            v if v >= 1000 && v <= millis(options.max_msg_timeout) => {
                settings.msg_timeout = ms(v);
            }
            v => return Err(format!("msg timeout ({v}) is invalid")),
        }
        Ok(settings)
    }

    async fn auth(&mut self, params: &[&[u8]]) -> Reply {
        if self.state() != STATE_INIT {
            return Err(invalid("cannot AUTH in current state"));
        }
        if params.len() != 1 {
            return Err(invalid("AUTH invalid number of parameters"));
        }
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

    async fn sub(&mut self, params: &[&[u8]]) -> Reply {
        if self.state() != STATE_INIT {
            return Err(invalid("cannot SUB in current state"));
        }
        if self.settings.heartbeat_interval.is_none() {
            return Err(invalid("cannot SUB with heartbeats disabled"));
        }
        if params.len() < 3 {
            return Err(invalid("SUB insufficient number of parameters"));
        }
        let topic_name = valid_name(params[1], ErrorCode::BadTopic, "SUB topic")?;
        let channel_name = valid_name(params[2], ErrorCode::BadChannel, "SUB channel")?;
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

    fn rdy(&mut self, params: &[&[u8]]) -> Reply {
        let state = self.state();
        if state == STATE_CLOSING {
            tracing::info!(
                "PROTOCOL(V2): [{}] ignoring RDY after CLS in state ClientStateV2Closing",
                self.client.remote
            );
            return Ok(None);
        }
        if state != STATE_SUBSCRIBED {
            return Err(invalid("cannot RDY in current state"));
        }
        let count = match params.get(1) {
            Some(param) => parse_base10(param)
                .ok_or_else(|| invalid(format!("RDY could not parse count {}", text(param))))?,
            None => 1,
        };
        let max = self.nsqd.options.max_rdy_count;
        if count > max {
            return Err(invalid(format!("RDY count {count} out of range 0-{max}")));
        }
        if let Some(consumer) = &self.consumer {
            consumer.set_ready(count);
        }
        self.wake.notify_one();
        Ok(None)
    }

    /// The subscribed consumer and the message ID of FIN, REQ or TOUCH, after their checks.
    fn message_command<'p>(
        &self,
        name: &str,
        params: &[&'p [u8]],
        min_params: usize,
    ) -> Result<(Arc<engine::Consumer>, &'p [u8; protocol::MESSAGE_ID_LEN]), Failure> {
        let state = self.state();
        if state != STATE_SUBSCRIBED && state != STATE_CLOSING {
            return Err(invalid(format!("cannot {name} in current state")));
        }
        if params.len() < min_params {
            return Err(invalid(format!("{name} insufficient number of params")));
        }
        let id = message_id(params[1])?;
        let consumer = self
            .consumer
            .clone()
            .ok_or_else(|| invalid(format!("cannot {name} in current state")))?;
        Ok((consumer, id))
    }

    fn message_failed(code: ErrorCode, name: &str, id: &[u8], e: MessageError) -> Failure {
        error(code, format!("{name} {} failed {e}", text(id)))
    }

    fn fin(&mut self, params: &[&[u8]]) -> Reply {
        let (consumer, id) = self.message_command("FIN", params, 2)?;
        consumer
            .finish(id)
            .map_err(|e| Self::message_failed(ErrorCode::FinFailed, "FIN", id, e))?;
        self.wake.notify_one();
        Ok(None)
    }

    fn req(&mut self, params: &[&[u8]]) -> Reply {
        let (consumer, id) = self.message_command("REQ", params, 3)?;
        let timeout_ms = parse_base10(params[2])
            .ok_or_else(|| invalid(format!("REQ could not parse timeout {}", text(params[2]))))?;
        let max = self.nsqd.options.max_req_timeout;
        let mut delay = Duration::from_millis(timeout_ms);
        if delay > max {
            tracing::info!(
                "PROTOCOL(V2): [{}] REQ timeout {delay:?} out of range 0-{max:?}. Setting to {max:?}",
                self.client.remote
            );
            delay = max;
        }
        consumer
            .requeue(id, delay)
            .map_err(|e| Self::message_failed(ErrorCode::ReqFailed, "REQ", id, e))?;
        self.wake.notify_one();
        Ok(None)
    }

    fn touch(&mut self, params: &[&[u8]]) -> Reply {
        let (consumer, id) = self.message_command("TOUCH", params, 2)?;
        consumer
            .touch(id)
            .map_err(|e| Self::message_failed(ErrorCode::TouchFailed, "TOUCH", id, e))?;
        Ok(None)
    }

    fn cls(&mut self) -> Reply {
        if self.state() != STATE_SUBSCRIBED {
            return Err(invalid("cannot CLS in current state"));
        }
        if let Some(consumer) = &self.consumer {
            consumer.set_ready(0);
        }
        self.client.set_state(STATE_CLOSING);
        self.wake.notify_one();
        Ok(Some(protocol::CLOSE_WAIT.to_vec()))
    }

    async fn publish(&mut self, params: &[&[u8]], kind: PubKind) -> Reply {
        let name = kind.name();
        let min_params = if kind == PubKind::Dpub { 3 } else { 2 };
        if params.len() < min_params {
            return Err(invalid(format!("{name} insufficient number of parameters")));
        }
        let topic_name = valid_name(params[1], ErrorCode::BadTopic, &format!("{name} topic"))?;
        let options = &self.nsqd.options;
        let mut defer = Duration::ZERO;
        if kind == PubKind::Dpub {
            let timeout_ms = parse_base10(params[2]).ok_or_else(|| {
                invalid(format!("DPUB could not parse timeout {}", text(params[2])))
            })?;
            let max_ms = u64::try_from(options.max_req_timeout.as_millis()).unwrap_or(u64::MAX);
            if timeout_ms > max_ms {
                return Err(invalid(format!("DPUB timeout {timeout_ms} out of range 0-{max_ms}")));
            }
            defer = Duration::from_millis(timeout_ms);
        }
        let max = options.max_msg_size;
        let bad = |t: String| error(ErrorCode::BadMessage, t);
        let size = self
            .read_size()
            .await
            .map_err(|_| bad(format!("{name} failed to read message body size")))?;
        if size <= 0 {
            return Err(bad(format!("{name} invalid message body size {size}")));
        }
        if u64::try_from(size).is_ok_and(|s| s > max) {
            return Err(bad(format!("{name} message too big {size} > {max}")));
        }
        let body = self
            .read_body(usize::try_from(size).unwrap_or(0))
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

    async fn mpub(&mut self, params: &[&[u8]]) -> Reply {
        if params.len() < 2 {
            return Err(invalid("MPUB insufficient number of parameters"));
        }
        // nsqd's text repeats the code here.
        let topic_name = valid_name(params[1], ErrorCode::BadTopic, "E_BAD_TOPIC MPUB topic")?;
        self.check_auth("MPUB", &topic_name, "").await?;
        let options = &self.nsqd.options;
        let (max_body, max_msg) = (options.max_body_size, options.max_msg_size);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PubKind {
    Pub,
    Dpub,
}

impl PubKind {
    fn name(self) -> &'static str {
        match self {
            Self::Pub => "PUB",
            Self::Dpub => "DPUB",
        }
    }

    fn failed_code(self) -> ErrorCode {
        match self {
            Self::Pub => ErrorCode::PubFailed,
            Self::Dpub => ErrorCode::DpubFailed,
        }
    }
}
