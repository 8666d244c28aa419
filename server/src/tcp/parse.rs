//! The pure part of protocol V2's commands: every check nsqd makes of a command's line, of its
//! body size and of an IDENTIFY body, in nsqd's order (which error a client sees first is part of
//! the protocol), with nsqd's texts. No I/O and no engine: the connection reads, asks these, and
//! then makes its one engine call. The fuzz target `v2_command` drives the same functions over
//! arbitrary bytes.

use std::time::Duration;

use protocol::command::{message_id, parse_base10};
use protocol::identify::IdentifyRequest;
use protocol::{ErrorCode, MESSAGE_ID_LEN, ProtocolError};

use crate::options::Options;

/// A connection's state, as nsqd's `ClientV2` keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Connected, not subscribed.
    Init,
    Subscribed,
    /// CLS was received.
    Closing,
}

/// What the checks of a command need to know of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub state: ClientState,
    /// TLS is required and the connection has not upgraded yet.
    pub tls_pending: bool,
    /// Heartbeats are on (SUB is refused without them).
    pub heartbeats: bool,
    /// A consumer exists (FIN, REQ and TOUCH need one).
    pub has_consumer: bool,
}

/// The server's bounds the checks apply, from its [`Options`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_rdy_count: u64,
    pub max_req_timeout: Duration,
    /// Largest PUB, DPUB or MPUB message.
    pub max_msg_size: u64,
    /// Largest IDENTIFY, AUTH or MPUB body.
    pub max_body_size: u64,
    pub max_heartbeat_interval: Duration,
    pub min_output_buffer_timeout: Duration,
    pub max_output_buffer_timeout: Duration,
    pub max_output_buffer_size: u64,
    pub max_msg_timeout: Duration,
}

impl Limits {
    pub fn from_options(options: &Options) -> Self {
        Self {
            max_rdy_count: options.max_rdy_count,
            max_req_timeout: options.max_req_timeout,
            max_msg_size: options.max_msg_size,
            max_body_size: options.max_body_size,
            max_heartbeat_interval: options.max_heartbeat_interval,
            min_output_buffer_timeout: options.min_output_buffer_timeout,
            max_output_buffer_timeout: options.max_output_buffer_timeout,
            max_output_buffer_size: options.max_output_buffer_size,
            max_msg_timeout: options.max_msg_timeout,
        }
    }
}

/// The per-connection settings IDENTIFY negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `None`: heartbeats (and read and write deadlines) disabled.
    pub heartbeat_interval: Option<Duration>,
    pub output_buffer_size: usize,
    /// `None`: no timed flush.
    pub output_buffer_timeout: Option<Duration>,
    /// Deliver about this percent of the messages; 0 delivers all.
    pub sample_rate: i32,
    pub msg_timeout: Duration,
}

/// PUB or DPUB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubKind {
    Pub,
    Dpub,
}

impl PubKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pub => "PUB",
            Self::Dpub => "DPUB",
        }
    }

    /// The code of a publish the engine refused.
    pub fn failed_code(self) -> ErrorCode {
        match self {
            Self::Pub => ErrorCode::PubFailed,
            Self::Dpub => ErrorCode::DpubFailed,
        }
    }
}

/// A command whose line passed every check. The commands marked so are followed by a body,
/// whose size the connection reads next and checks with [`checked_body_len`] (IDENTIFY, AUTH,
/// MPUB) or [`message_body_len`] (PUB, DPUB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// A body follows: the JSON of [`decode_identify`].
    Identify,
    /// A body follows: the secret.
    Auth,
    Sub {
        topic: String,
        channel: String,
    },
    /// A body follows: the message.
    Pub {
        kind: PubKind,
        topic: String,
        /// Zero for PUB.
        defer: Duration,
    },
    /// A body follows: the messages, as [`protocol::mpub::decode_mpub_ranges`] splits them.
    Mpub {
        topic: String,
    },
    Rdy(u64),
    /// RDY after CLS: ignored, as nsqd ignores it.
    RdyIgnored,
    Fin(&'a [u8; MESSAGE_ID_LEN]),
    Req {
        id: &'a [u8; MESSAGE_ID_LEN],
        /// The delay to use: the requested one, at most `max_req_timeout`.
        delay: Duration,
        /// The delay asked for, when it was above `max_req_timeout` (nsqd logs it).
        clamped_from: Option<Duration>,
    },
    Touch(&'a [u8; MESSAGE_ID_LEN]),
    Cls,
    Nop,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn invalid(text: impl Into<String>) -> ProtocolError {
    ProtocolError::invalid(text)
}

/// A topic or channel name parameter, valid by NSQ's rules, or `<code> <what> name "x" is not
/// valid`.
fn valid_name(param: &[u8], code: ErrorCode, what: &str) -> Result<String, ProtocolError> {
    let name = text(param);
    if engine::names::is_valid_name(&name) {
        Ok(name)
    } else {
        Err(ProtocolError::new(code, format!("{what} name {name:?} is not valid")))
    }
}

/// Checks a command line, split into its parameters (the first is the command's name), against
/// the connection's state and the server's limits, in nsqd's order.
pub fn parse_command<'a>(
    params: &[&'a [u8]],
    connection: &Connection,
    limits: &Limits,
) -> Result<Request<'a>, ProtocolError> {
    let name = params.first().copied().unwrap_or_default();
    if name != b"IDENTIFY" && connection.tls_pending {
        return Err(invalid(format!("cannot {} in current state (TLS required)", text(name))));
    }
    let state = connection.state;
    match name {
        b"IDENTIFY" => {
            if state != ClientState::Init {
                return Err(invalid("cannot IDENTIFY in current state"));
            }
            Ok(Request::Identify)
        }
        b"FIN" => Ok(Request::Fin(message_params("FIN", params, 2, connection)?)),
        b"RDY" => rdy(params, state, limits),
        b"REQ" => {
            let id = message_params("REQ", params, 3, connection)?;
            let timeout_ms = parse_base10(params[2]).ok_or_else(|| {
                invalid(format!("REQ could not parse timeout {}", text(params[2])))
            })?;
            let requested = Duration::from_millis(timeout_ms);
            let max = limits.max_req_timeout;
            let clamped_from = (requested > max).then_some(requested);
            Ok(Request::Req { id, delay: requested.min(max), clamped_from })
        }
        b"PUB" => publish(params, PubKind::Pub, limits),
        b"MPUB" => {
            if params.len() < 2 {
                return Err(invalid("MPUB insufficient number of parameters"));
            }
            // nsqd's text repeats the code here.
            let topic = valid_name(params[1], ErrorCode::BadTopic, "E_BAD_TOPIC MPUB topic")?;
            Ok(Request::Mpub { topic })
        }
        b"DPUB" => publish(params, PubKind::Dpub, limits),
        b"NOP" => Ok(Request::Nop),
        b"TOUCH" => Ok(Request::Touch(message_params("TOUCH", params, 2, connection)?)),
        b"SUB" => {
            if state != ClientState::Init {
                return Err(invalid("cannot SUB in current state"));
            }
            if !connection.heartbeats {
                return Err(invalid("cannot SUB with heartbeats disabled"));
            }
            if params.len() < 3 {
                return Err(invalid("SUB insufficient number of parameters"));
            }
            let topic = valid_name(params[1], ErrorCode::BadTopic, "SUB topic")?;
            let channel = valid_name(params[2], ErrorCode::BadChannel, "SUB channel")?;
            Ok(Request::Sub { topic, channel })
        }
        b"CLS" => {
            if state != ClientState::Subscribed {
                return Err(invalid("cannot CLS in current state"));
            }
            Ok(Request::Cls)
        }
        b"AUTH" => {
            if state != ClientState::Init {
                return Err(invalid("cannot AUTH in current state"));
            }
            if params.len() != 1 {
                return Err(invalid("AUTH invalid number of parameters"));
            }
            Ok(Request::Auth)
        }
        other => Err(invalid(format!("invalid command {}", text(other)))),
    }
}

fn rdy(
    params: &[&[u8]],
    state: ClientState,
    limits: &Limits,
) -> Result<Request<'static>, ProtocolError> {
    if state == ClientState::Closing {
        return Ok(Request::RdyIgnored);
    }
    if state != ClientState::Subscribed {
        return Err(invalid("cannot RDY in current state"));
    }
    let count = match params.get(1) {
        Some(param) => parse_base10(param)
            .ok_or_else(|| invalid(format!("RDY could not parse count {}", text(param))))?,
        None => 1,
    };
    let max = limits.max_rdy_count;
    if count > max {
        return Err(invalid(format!("RDY count {count} out of range 0-{max}")));
    }
    Ok(Request::Rdy(count))
}

/// The message ID of FIN, REQ or TOUCH, after their checks.
fn message_params<'a>(
    name: &str,
    params: &[&'a [u8]],
    min_params: usize,
    connection: &Connection,
) -> Result<&'a [u8; MESSAGE_ID_LEN], ProtocolError> {
    let state = connection.state;
    if state != ClientState::Subscribed && state != ClientState::Closing {
        return Err(invalid(format!("cannot {name} in current state")));
    }
    if params.len() < min_params {
        return Err(invalid(format!("{name} insufficient number of params")));
    }
    let id = message_id(params[1])?;
    if !connection.has_consumer {
        return Err(invalid(format!("cannot {name} in current state")));
    }
    Ok(id)
}

fn publish<'a>(
    params: &[&'a [u8]],
    kind: PubKind,
    limits: &Limits,
) -> Result<Request<'a>, ProtocolError> {
    let name = kind.name();
    let min_params = if kind == PubKind::Dpub { 3 } else { 2 };
    if params.len() < min_params {
        return Err(invalid(format!("{name} insufficient number of parameters")));
    }
    let topic = valid_name(params[1], ErrorCode::BadTopic, &format!("{name} topic"))?;
    let mut defer = Duration::ZERO;
    if kind == PubKind::Dpub {
        let timeout_ms = parse_base10(params[2])
            .ok_or_else(|| invalid(format!("DPUB could not parse timeout {}", text(params[2]))))?;
        let max_ms = u64::try_from(limits.max_req_timeout.as_millis()).unwrap_or(u64::MAX);
        if timeout_ms > max_ms {
            return Err(invalid(format!("DPUB timeout {timeout_ms} out of range 0-{max_ms}")));
        }
        defer = Duration::from_millis(timeout_ms);
    }
    Ok(Request::Pub { kind, topic, defer })
}

/// The size of an IDENTIFY, AUTH or MPUB body, which must be in `1..=max`; with `too_big_first`
/// (IDENTIFY and AUTH) a size over `max` is refused before a size below 1, as nsqd does.
pub fn checked_body_len(
    size: i32,
    code: ErrorCode,
    what: &str,
    max: u64,
    too_big_first: bool,
) -> Result<usize, ProtocolError> {
    let too_big = u64::try_from(size).is_ok_and(|s| s > max);
    let big = || ProtocolError::new(code, format!("{what} body too big {size} > {max}"));
    if too_big_first && too_big {
        return Err(big());
    }
    if size <= 0 {
        return Err(ProtocolError::new(code, format!("{what} invalid body size {size}")));
    }
    if too_big {
        return Err(big());
    }
    Ok(usize::try_from(size).unwrap_or(0))
}

/// The size of a PUB or DPUB message, which must be in `1..=max_msg_size`.
pub fn message_body_len(kind: PubKind, size: i32, limits: &Limits) -> Result<usize, ProtocolError> {
    let name = kind.name();
    let max = limits.max_msg_size;
    if size <= 0 {
        return Err(bad_message(format!("{name} invalid message body size {size}")));
    }
    if u64::try_from(size).is_ok_and(|s| s > max) {
        return Err(bad_message(format!("{name} message too big {size} > {max}")));
    }
    Ok(usize::try_from(size).unwrap_or(0))
}

fn bad_message(text: String) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadMessage, text)
}

/// The request of an IDENTIFY body.
pub fn decode_identify(body: &[u8]) -> Result<IdentifyRequest, ProtocolError> {
    serde_json::from_slice(body)
        .map_err(|_| ProtocolError::new(ErrorCode::BadBody, "IDENTIFY failed to decode JSON body"))
}

/// The settings an IDENTIFY asks for, checked against the server's bounds in nsqd's order;
/// what the request leaves at zero keeps its value in `current`. The error is the reason nsqd
/// gives after `IDENTIFY `.
pub fn negotiate(
    request: &IdentifyRequest,
    current: Settings,
    limits: &Limits,
) -> Result<Settings, String> {
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
    let mut settings = current;
    match request.heartbeat_interval {
        -1 => settings.heartbeat_interval = None,
        0 => {}
        v if v >= 1000 && v <= millis(limits.max_heartbeat_interval) => {
            settings.heartbeat_interval = Some(ms(v));
        }
        v => return Err(format!("heartbeat interval ({v}) is invalid")),
    }
    match request.output_buffer_timeout {
        -1 => settings.output_buffer_timeout = None,
        0 => {}
        v if v >= millis(limits.min_output_buffer_timeout)
            && v <= millis(limits.max_output_buffer_timeout) =>
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
        v if v >= 64 && u64::try_from(v).is_ok_and(|v| v <= limits.max_output_buffer_size) => {
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
        v if v >= 1000 && v <= millis(limits.max_msg_timeout) => {
            settings.msg_timeout = ms(v);
        }
        v => return Err(format!("msg timeout ({v}) is invalid")),
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_rdy_count: 2500,
            max_req_timeout: Duration::from_secs(3600),
            max_msg_size: 1024,
            max_body_size: 4096,
            max_heartbeat_interval: Duration::from_secs(60),
            min_output_buffer_timeout: Duration::from_millis(1),
            max_output_buffer_timeout: Duration::from_secs(30),
            max_output_buffer_size: 65_536,
            max_msg_timeout: Duration::from_secs(900),
        }
    }

    fn connection(state: ClientState) -> Connection {
        Connection { state, tls_pending: false, heartbeats: true, has_consumer: true }
    }

    fn parse(line: &[u8], state: ClientState) -> Result<Request<'_>, String> {
        let params = protocol::command::split_params(line);
        parse_command(&params, &connection(state), &limits()).map_err(|e| e.to_string())
    }

    #[test]
    fn lines_that_pass_give_their_request() {
        use ClientState::{Closing, Init, Subscribed};
        let sub = Request::Sub { topic: "t".into(), channel: "c".into() };
        assert_eq!(parse(b"SUB t c", Init), Ok(sub));
        let dpub = Request::Pub {
            kind: PubKind::Dpub,
            topic: "t".into(),
            defer: Duration::from_millis(5),
        };
        assert_eq!(parse(b"DPUB t 5", Init), Ok(dpub));
        assert_eq!(parse(b"RDY", Subscribed), Ok(Request::Rdy(1)));
        assert_eq!(parse(b"RDY x", Closing), Ok(Request::RdyIgnored));
        let id = b"000000000000000a";
        let req = Request::Req {
            id,
            delay: Duration::from_secs(3600),
            clamped_from: Some(Duration::from_secs(7200)),
        };
        assert_eq!(parse(b"REQ 000000000000000a 7200000", Closing), Ok(req));
    }

    #[test]
    fn checks_come_in_nsqds_order_with_its_texts() {
        use ClientState::{Init, Subscribed};
        assert_eq!(
            parse(b"SUB t", Subscribed).unwrap_err(),
            "E_INVALID cannot SUB in current state"
        );
        assert_eq!(
            parse(b"SUB t", Init).unwrap_err(),
            "E_INVALID SUB insufficient number of parameters"
        );
        assert_eq!(
            parse(b"SUB t b:d", Init).unwrap_err(),
            "E_BAD_CHANNEL SUB channel name \"b:d\" is not valid"
        );
        assert_eq!(
            parse(b"MPUB b:d", Subscribed).unwrap_err(),
            "E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"b:d\" is not valid"
        );
        assert_eq!(parse(b"FIN short", Init).unwrap_err(), "E_INVALID cannot FIN in current state");
        assert_eq!(parse(b"FIN short", Subscribed).unwrap_err(), "E_INVALID invalid message ID");
        assert_eq!(
            parse(b"RDY 2501", Subscribed).unwrap_err(),
            "E_INVALID RDY count 2501 out of range 0-2500"
        );
        assert_eq!(
            parse(b"DPUB t 3600001", Init).unwrap_err(),
            "E_INVALID DPUB timeout 3600001 out of range 0-3600000"
        );
        assert_eq!(parse(b"WAT", Init).unwrap_err(), "E_INVALID invalid command WAT");
        let tls = Connection { tls_pending: true, ..connection(Init) };
        let params = protocol::command::split_params(b"NOP");
        let error = parse_command(&params, &tls, &limits()).unwrap_err();
        assert_eq!(error.to_string(), "E_INVALID cannot NOP in current state (TLS required)");
    }

    #[test]
    fn body_sizes_are_checked_in_nsqds_order() {
        let check = |size, first| {
            checked_body_len(size, ErrorCode::BadBody, "IDENTIFY", 10, first)
                .map_err(|e| e.to_string())
        };
        assert_eq!(check(5, true), Ok(5));
        assert_eq!(check(11, true).unwrap_err(), "E_BAD_BODY IDENTIFY body too big 11 > 10");
        assert_eq!(check(0, false).unwrap_err(), "E_BAD_BODY IDENTIFY invalid body size 0");
        assert_eq!(check(-1, true).unwrap_err(), "E_BAD_BODY IDENTIFY invalid body size -1");
        let message =
            |size| message_body_len(PubKind::Pub, size, &limits()).map_err(|e| e.to_string());
        assert_eq!(message(1025).unwrap_err(), "E_BAD_MESSAGE PUB message too big 1025 > 1024");
        assert_eq!(message(0).unwrap_err(), "E_BAD_MESSAGE PUB invalid message body size 0");
    }

    #[test]
    fn negotiation_keeps_what_the_request_leaves_at_zero() {
        let current = Settings {
            heartbeat_interval: Some(Duration::from_secs(30)),
            output_buffer_size: 16 * 1024,
            output_buffer_timeout: Some(Duration::from_millis(250)),
            sample_rate: 0,
            msg_timeout: Duration::from_secs(60),
        };
        let request = decode_identify(br#"{"heartbeat_interval":-1,"msg_timeout":2000}"#).unwrap();
        let settings = negotiate(&request, current, &limits()).unwrap();
        assert_eq!(settings.heartbeat_interval, None);
        assert_eq!(settings.msg_timeout, Duration::from_secs(2));
        assert_eq!(settings.output_buffer_size, current.output_buffer_size);
        let request = decode_identify(br#"{"sample_rate":100}"#).unwrap();
        assert_eq!(
            negotiate(&request, current, &limits()).unwrap_err(),
            "sample rate (100) is invalid"
        );
        assert!(decode_identify(b"{").is_err());
    }
}
