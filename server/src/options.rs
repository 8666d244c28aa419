//! nsqd's command line, with NSQ's flag names, defaults and syntax.
//!
//! - **Go flag syntax.** Go's `flag` package takes `-flag=v`, `-flag v`, `--flag=v` and
//!   `--flag v`, and booleans as `-flag` or `-flag=false`. [`normalize_go_args`] turns the
//!   single-dash forms into clap's double-dash ones; booleans take an optional `=value`.
//! - **Config file.** `--config` names a TOML file whose keys are the flag names with `_` for
//!   `-` (and NSQ's exceptions, [`config_key_to_flag`]). A flag given on the command line beats
//!   the file, which beats the default. Durations in the file are Go strings (`"60s"`) or
//!   integers in milliseconds, as nsqd reads them. Keys nsqd knows but this server does not
//!   implement are refused at start-up; unknown keys are logged and ignored, as nsqd ignores them.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, Args, Parser};

/// The version nsqd reports (`--version`, `/info`, IDENTIFY, `/stats`): the NSQ release whose
/// protocol and API this server implements, so that tools comparing versions treat it as such.
pub const NSQ_VERSION: &str = "1.3.0";

/// Our own version, shown beside NSQ's.
pub const PACKAGE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The line `--version` prints, in nsqd's form.
pub fn version_line(binary: &str) -> String {
    format!(
        "{binary} v{NSQ_VERSION} (built w/rust{} nsq-rs {PACKAGE_VERSION})",
        env!("CARGO_PKG_RUST_VERSION")
    )
}

/// The data directory when `--data-path` is not given, under the working directory.
pub const DEFAULT_DATA_PATH: &str = "nsqd-data";

/// The flags every daemon takes, first in its help, with NSQ's names and texts. Each daemon
/// flattens them into its options and gives `--log-prefix` its own default (`"[nsqd] "`,
/// `"[nsqlookupd] "`) with `mut_arg`.
#[derive(Debug, Clone, Args)]
pub struct DaemonFlags {
    /// print version string
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    pub version: bool,
    /// path to config file
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// set log verbosity: debug, info, warn, error, or fatal
    #[arg(long, default_value = "info", value_parser = ["debug", "info", "warn", "error", "fatal"], ignore_case = true)]
    pub log_level: String,
    /// log message prefix
    #[arg(long, required = false)]
    pub log_prefix: String,
    /// [deprecated] has no effect, use --log-level
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    pub verbose: bool,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "nsqd",
    disable_version_flag = true,
    about = "nsqd: a realtime distributed message queue node",
    mut_arg("log_prefix", |arg| arg.default_value("[nsqd] "))
)]
pub struct Options {
    #[command(flatten)]
    pub daemon: DaemonFlags,
    /// unique part for message IDs, (int) in range [0,1024) (default is hash of hostname)
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..1024))]
    pub node_id: Option<i64>,
    /// [deprecated] use --node-id
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    pub worker_id: bool,

    /// <addr>:<port> to listen on for HTTPS clients (with --tls-cert and --tls-key)
    #[arg(long, default_value = "0.0.0.0:4152")]
    pub https_address: String,
    /// address to listen on for HTTP clients (<addr>:<port>); empty disables HTTP
    #[arg(long, default_value = "0.0.0.0:4151")]
    pub http_address: String,
    /// address to listen on for TCP clients (<addr>:<port>)
    #[arg(long, default_value = "0.0.0.0:4150")]
    pub tcp_address: String,
    /// address that will be registered with lookupd (defaults to the OS hostname)
    #[arg(long)]
    pub broadcast_address: Option<String>,
    /// TCP port that will be registered with lookupd (defaults to the TCP port that this nsqd is listening on)
    #[arg(long, default_value_t = 0)]
    pub broadcast_tcp_port: u16,
    /// HTTP port that will be registered with lookupd (defaults to the HTTP port that this nsqd is listening on)
    #[arg(long, default_value_t = 0)]
    pub broadcast_http_port: u16,
    /// lookupd TCP address (may be given multiple times)
    #[arg(long = "lookupd-tcp-address", action = ArgAction::Append)]
    pub lookupd_tcp_addresses: Vec<String>,
    /// duration between PINGs to each lookupd (ours; nsqd's is fixed at 15s): keep it below lookupd's --inactive-producer-timeout
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lookupd_ping_interval: Duration,

    /// path to store disk-backed messages
    #[arg(long, default_value = DEFAULT_DATA_PATH)]
    pub data_path: PathBuf,
    /// number of messages per topic that may be acknowledged before they are written (0: written before OK)
    #[arg(long, default_value_t = 10_000)]
    pub mem_queue_size: u64,
    /// number of bytes per log segment file before rolling
    #[arg(long, default_value_t = 104_857_600, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_bytes_per_file: u64,
    /// number of messages per fsync (1: fsync before OK, shared by concurrent publishers)
    #[arg(long, default_value_t = 2500)]
    pub sync_every: u64,
    /// duration of time per fsync
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub sync_timeout: Duration,
    /// directory to archive consumed log segments into, zstd-compressed, for nsq-fsck replay (ours; empty disables archiving)
    #[arg(long, default_value = "")]
    pub archive_path: String,
    /// accepted for compatibility; timeouts here fire exactly, without scanning
    #[arg(long, default_value_t = 4)]
    pub queue_scan_worker_pool_max: u64,
    /// accepted for compatibility; timeouts here fire exactly, without scanning
    #[arg(long, default_value_t = 20)]
    pub queue_scan_selection_count: u64,

    /// default duration to wait before auto-requeing a message
    #[arg(long, default_value = "1m0s", value_parser = parse_duration)]
    pub msg_timeout: Duration,
    /// maximum duration before a message will timeout
    #[arg(long, default_value = "15m0s", value_parser = parse_duration)]
    pub max_msg_timeout: Duration,
    /// maximum size of a single message in bytes
    #[arg(long, default_value_t = 1_048_576, value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    pub max_msg_size: u64,
    /// maximum requeuing timeout for a message
    #[arg(long, default_value = "1h0m0s", value_parser = parse_duration)]
    pub max_req_timeout: Duration,
    /// maximum size of a single command body
    #[arg(long, default_value_t = 5_242_880, value_parser = clap::value_parser!(u64).range(1..=i32::MAX as u64))]
    pub max_body_size: u64,

    /// maximum client configurable duration of time between client heartbeats
    #[arg(long, default_value = "1m0s", value_parser = parse_duration)]
    pub max_heartbeat_interval: Duration,
    /// maximum RDY count for a client
    #[arg(long, default_value_t = 2500)]
    pub max_rdy_count: u64,
    /// maximum client configurable size (in bytes) for a client output buffer
    #[arg(long, default_value_t = 65_536)]
    pub max_output_buffer_size: u64,
    /// maximum client configurable duration of time between flushing to a client
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub max_output_buffer_timeout: Duration,
    /// minimum client configurable duration of time between flushing to a client
    #[arg(long, default_value = "25ms", value_parser = parse_duration)]
    pub min_output_buffer_timeout: Duration,
    /// default duration of time between flushing data to clients
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub output_buffer_timeout: Duration,
    /// maximum channel consumer connection count per nsqd instance (default 0, i.e., unlimited)
    #[arg(long, default_value_t = 0)]
    pub max_channel_consumers: u64,

    /// message processing time percentiles (as float (0, 1.0]) to track (can be specified multiple times or comma separated '1.0,0.99,0.95', default none)
    #[arg(long = "e2e-processing-latency-percentile", action = ArgAction::Append, value_delimiter = ',', value_parser = parse_percentile)]
    pub e2e_processing_latency_percentiles: Vec<f64>,
    /// calculate end to end latency quantiles for this duration of time (ie: 60s would only show quantile calculations from the past 60 seconds)
    #[arg(long, default_value = "10m0s", value_parser = parse_duration)]
    pub e2e_processing_latency_window_time: Duration,

    /// <addr>:<port> or a full url to query auth server (may be given multiple times)
    #[arg(long = "auth-http-address", action = ArgAction::Append)]
    pub auth_http_addresses: Vec<String>,
    /// HTTP method to use for auth server requests
    #[arg(long, default_value = "get", value_parser = parse_auth_method)]
    pub auth_http_request_method: String,
    /// timeout for HTTP connect
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub http_client_connect_timeout: Duration,
    /// timeout for HTTP request
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub http_client_request_timeout: Duration,

    /// path to certificate file
    #[arg(long, default_value = "")]
    pub tls_cert: String,
    /// path to key file
    #[arg(long, default_value = "")]
    pub tls_key: String,
    /// client certificate auth policy ('require' or 'require-verify')
    #[arg(long, default_value = "")]
    pub tls_client_auth_policy: String,
    /// path to certificate authority file
    #[arg(long, default_value = "")]
    pub tls_root_ca_file: String,
    /// require TLS for client connections (true, false, tcp-https)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = TlsRequired::parse)]
    pub tls_required: TlsRequired,
    /// minimum SSL/TLS version acceptable ('tls1.0', 'tls1.1', 'tls1.2' or 'tls1.3'; rustls speaks 1.2 and 1.3 only)
    #[arg(long, default_value = "tls1.0", value_parser = TlsMinVersion::parse)]
    pub tls_min_version: TlsMinVersion,

    /// enable deflate feature negotiation (client compression)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
    pub deflate: bool,
    /// max deflate compression level a client can negotiate (> values == > nsqd CPU usage)
    #[arg(long, default_value_t = 6)]
    pub max_deflate_level: i64,
    /// enable snappy feature negotiation (client compression)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
    pub snappy: bool,
}

/// `--tls-required`: which connections must use TLS (nsqd's numbers, shown by `/config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRequired {
    /// `false`: TLS is the client's choice.
    No = 0,
    /// `tcp-https`: TCP clients must upgrade; plain HTTP is still served.
    ExceptHttp = 1,
    /// `true`: TCP clients must upgrade, and plain HTTP answers 403.
    Yes = 2,
}

impl TlsRequired {
    /// `tcp-https`, or a boolean as Go's `strconv.ParseBool` reads one.
    fn parse(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "tcp-https" => Ok(Self::ExceptHttp),
            "1" | "t" | "true" => Ok(Self::Yes),
            "0" | "f" | "false" => Ok(Self::No),
            _ => Err(format!("invalid value {text:?}: use true, false or tcp-https")),
        }
    }
}

/// `--tls-min-version`, with the protocol numbers Go uses (shown by `/config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMinVersion {
    Tls10 = 0x0301,
    Tls11 = 0x0302,
    Tls12 = 0x0303,
    Tls13 = 0x0304,
}

impl TlsMinVersion {
    fn parse(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "tls1.0" => Ok(Self::Tls10),
            "tls1.1" => Ok(Self::Tls11),
            "tls1.2" => Ok(Self::Tls12),
            "tls1.3" => Ok(Self::Tls13),
            _ => Err(format!("unknown tlsVersionOption {text:?}")),
        }
    }
}

fn parse_auth_method(text: &str) -> Result<String, String> {
    match text {
        "get" | "post" => Ok(text.to_owned()),
        _ => Err("--auth-http-request-method must be post or get".to_owned()),
    }
}

/// nsqd's heartbeat interval when the client does not choose one: half its fixed 60 s client
/// timeout.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// nsqd's default output buffer size.
pub const DEFAULT_OUTPUT_BUFFER_SIZE: u64 = 16 * 1024;

/// Flags whose values are durations (an integer for one in a config file means milliseconds).
const DURATION_FLAGS: &[&str] = &[
    "sync-timeout",
    "msg-timeout",
    "max-msg-timeout",
    "max-req-timeout",
    "max-heartbeat-interval",
    "max-output-buffer-timeout",
    "min-output-buffer-timeout",
    "output-buffer-timeout",
    "e2e-processing-latency-window-time",
    "http-client-connect-timeout",
    "http-client-request-timeout",
    "lookupd-ping-interval",
    // nsqlookupd's
    "inactive-producer-timeout",
    "tombstone-lifetime",
];

/// Options of NSQ's nsqd that this server does not implement: refused rather than ignored, so
/// nobody believes they are in effect.
const UNSUPPORTED_FLAGS: &[&str] = &[
    "statsd-address",
    "statsd-interval",
    "statsd-mem-stats",
    "statsd-prefix",
    "statsd-udp-packet-size",
    "statsd-exclude-ephemeral",
    "topology-region",
    "topology-zone",
    "enable-experiment",
];

/// Go's duration syntax (`1h2m3.5s`, `250ms`, `0`) through humantime, which takes the same
/// units.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim_start_matches(['+', '0']).is_empty() && !text.is_empty() {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|error| format!("invalid duration {text:?}: {error}"))
}

fn parse_percentile(text: &str) -> Result<f64, String> {
    let value: f64 = text.trim().parse().map_err(|_| format!("invalid percentile {text:?}"))?;
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(format!("percentile {value} is not in (0, 1.0]"))
    }
}

/// Rewrites Go-style single-dash long flags (`-mem-queue-size=0`) as clap's `--` form.
/// Arguments after a bare `--` are left alone, as are negative numbers given as values.
pub fn normalize_go_args<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut out = Vec::new();
    let mut rest_verbatim = false;
    for (index, arg) in args.into_iter().enumerate() {
        let arg: OsString = arg.into();
        if index == 0 || rest_verbatim {
            out.push(arg);
            continue;
        }
        match arg.to_str() {
            Some("--") => {
                rest_verbatim = true;
                out.push(arg);
            }
            Some(text)
                if text.len() > 2
                    && text.starts_with('-')
                    && !text.starts_with("--")
                    && text.as_bytes()[1].is_ascii_alphabetic() =>
            {
                out.push(format!("-{text}").into());
            }
            _ => out.push(arg),
        }
    }
    out
}

/// The flag a config-file key sets (`mem_queue_size` is `--mem-queue-size`).
pub fn config_key_to_flag(key: &str) -> String {
    match key {
        "id" => "node-id".to_owned(),
        "nsqlookupd_tcp_addresses" => "lookupd-tcp-address".to_owned(),
        "auth_http_addresses" => "auth-http-address".to_owned(),
        "e2e_processing_latency_percentiles" => "e2e-processing-latency-percentile".to_owned(),
        other => other.replace('_', "-"),
    }
}

fn toml_to_flag_values(flag: &str, value: &toml::Value) -> anyhow::Result<Vec<String>> {
    let scalar = |value: &toml::Value| -> anyhow::Result<String> {
        Ok(match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) if DURATION_FLAGS.contains(&flag) => format!("{i}ms"),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!("config option {flag:?}: unsupported value {other}"),
        })
    };
    match value {
        toml::Value::Array(items) => items.iter().map(scalar).collect(),
        other => Ok(vec![scalar(other)?]),
    }
}

/// Parses a command line (the program name first) for any of the daemons' option sets: Go
/// syntax accepted, then the `--config` file it names merged in under the command line. Keys of
/// `unsupported` flags in the file stop the parse; unknown keys are logged and ignored.
pub fn parse_with_config<T, I, A>(args: I, unsupported: &[&str]) -> anyhow::Result<T>
where
    T: Parser,
    I: IntoIterator<Item = A>,
    A: Into<OsString>,
{
    let args = normalize_go_args(args);
    let command = T::command();
    let matches = command.clone().try_get_matches_from(&args)?;
    let Some(config_path) = matches.get_one::<PathBuf>("config").cloned() else {
        return Ok(T::from_arg_matches(&matches)?);
    };
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("failed to load config file {}", config_path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("failed to load config file {}", config_path.display()))?;
    let mut from_file: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        let flag = config_key_to_flag(key);
        if unsupported.contains(&flag.as_str()) {
            bail!(
                "config file {}: option {key:?} is not supported by this build",
                config_path.display()
            );
        }
        let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(flag.as_str()))
        else {
            tracing::warn!(key = %key, "unknown option in the config file, ignored");
            continue;
        };
        let id = arg.get_id().as_str();
        if matches.value_source(id) == Some(ValueSource::CommandLine) || id == "config" {
            continue;
        }
        for value in toml_to_flag_values(&flag, value)? {
            from_file.push(format!("--{flag}={value}").into());
        }
    }
    let mut merged: Vec<OsString> = args[..1].to_vec();
    merged.extend(from_file);
    merged.extend(args[1..].iter().cloned());
    T::try_parse_from(merged).with_context(|| format!("in config file {}", config_path.display()))
}

impl Options {
    /// Parses nsqd's command line and the config file it names.
    pub fn parse_args<I, T>(args: I) -> anyhow::Result<Options>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let options: Options = parse_with_config(args, UNSUPPORTED_FLAGS)?;
        options.validate()?;
        Ok(options)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=9).contains(&self.max_deflate_level) {
            bail!("--max-deflate-level must be [1,9]");
        }
        if self.min_output_buffer_timeout > self.max_output_buffer_timeout {
            bail!("--min-output-buffer-timeout is above --max-output-buffer-timeout");
        }
        if self.msg_timeout > self.max_msg_timeout {
            bail!("--msg-timeout is above --max-msg-timeout");
        }
        let archive_max = engine::archive::ARCHIVE_MAX_SEGMENT_BYTES;
        if !self.archive_path.is_empty() && self.max_bytes_per_file > archive_max {
            bail!(
                "--archive-path cannot archive segments above {archive_max} bytes: lower --max-bytes-per-file"
            );
        }
        let has_tls = !self.tls_cert.is_empty() || !self.tls_key.is_empty();
        if self.effective_tls_required() != TlsRequired::No && !has_tls {
            bail!("cannot require TLS client connections without TLS key and cert");
        }
        Ok(())
    }

    /// `--tls-required`, which a client auth policy raises to `true`, as nsqd does.
    pub fn effective_tls_required(&self) -> TlsRequired {
        if !self.tls_client_auth_policy.is_empty() && self.tls_required == TlsRequired::No {
            TlsRequired::Yes
        } else {
            self.tls_required
        }
    }

    /// The engine's settings these flags make.
    pub fn engine_config(&self) -> engine::EngineConfig {
        let mut percentiles = self.e2e_processing_latency_percentiles.clone();
        percentiles.sort_by(|a, b| b.total_cmp(a));
        percentiles.dedup();
        engine::EngineConfig {
            log: engine::LogConfig {
                max_bytes_per_file: self.max_bytes_per_file,
                max_body_bytes: u32::try_from(self.max_msg_size).unwrap_or(u32::MAX),
                sync: engine::SyncPolicy::from_nsq_flags(self.sync_every, self.sync_timeout),
                ..engine::LogConfig::default()
            },
            mem_queue_size: self.mem_queue_size,
            msg_timeout: self.msg_timeout,
            max_msg_timeout: self.max_msg_timeout,
            max_req_timeout: self.max_req_timeout,
            e2e_percentiles: percentiles,
            e2e_window: self.e2e_processing_latency_window_time,
            archive_dir: (!self.archive_path.is_empty()).then(|| PathBuf::from(&self.archive_path)),
            ..engine::EngineConfig::default()
        }
    }

    /// The tracing filter `--log-level` means (`fatal` logs errors only).
    pub fn log_filter(&self) -> &'static str {
        match self.daemon.log_level.to_ascii_lowercase().as_str() {
            "debug" => "debug",
            "warn" => "warn",
            "error" | "fatal" => "error",
            _ => "info",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(args: &[&str]) -> Options {
        Options::parse_args(std::iter::once("nsqd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_are_nsqds() {
        let o = parse(&[]);
        assert_eq!(o.tcp_address, "0.0.0.0:4150");
        assert_eq!(o.http_address, "0.0.0.0:4151");
        assert_eq!(o.mem_queue_size, 10_000);
        assert_eq!(o.sync_every, 2500);
        assert_eq!(o.sync_timeout, Duration::from_secs(2));
        assert_eq!(o.msg_timeout, Duration::from_secs(60));
        assert_eq!(o.max_msg_timeout, Duration::from_secs(900));
        assert_eq!(o.max_req_timeout, Duration::from_secs(3600));
        assert_eq!(o.max_msg_size, 1_048_576);
        assert_eq!(o.max_body_size, 5_242_880);
        assert_eq!(o.max_rdy_count, 2500);
        assert_eq!(o.max_output_buffer_size, 65_536);
        assert_eq!(o.max_output_buffer_timeout, Duration::from_secs(30));
        assert_eq!(o.output_buffer_timeout, Duration::from_millis(250));
        assert_eq!(o.data_path, PathBuf::from(DEFAULT_DATA_PATH));
        assert_eq!(o.engine_config().archive_dir, None, "archiving is off by default");
        assert!(o.deflate && o.snappy && !o.daemon.verbose);
        assert_eq!(o.daemon.log_prefix, "[nsqd] ");
    }

    #[test]
    fn every_go_flag_syntax_is_accepted() {
        for args in [
            &["-mem-queue-size=0"][..],
            &["-mem-queue-size", "0"],
            &["--mem-queue-size=0"],
            &["--mem-queue-size", "0"],
        ] {
            assert_eq!(parse(args).mem_queue_size, 0, "{args:?}");
        }
        assert!(parse(&["-verbose"]).daemon.verbose);
        assert!(parse(&["--verbose=true"]).daemon.verbose);
        assert!(!parse(&["-snappy=false"]).snappy);
        assert_eq!(parse(&["-msg-timeout", "1m30s"]).msg_timeout, Duration::from_secs(90));
        assert_eq!(parse(&["-sync-timeout=0"]).sync_timeout, Duration::ZERO);
        assert_eq!(
            parse(&[
                "-e2e-processing-latency-percentile=0.99,0.5",
                "--e2e-processing-latency-percentile",
                "1.0"
            ])
            .e2e_processing_latency_percentiles,
            [0.99, 0.5, 1.0]
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            &["--node-id=1024"][..],
            &["--msg-timeout=soon"],
            &["--e2e-processing-latency-percentile=1.5"],
            &["--max-deflate-level=10"],
            &["--tls-required"],
            &["--tls-client-auth-policy=require"],
            &["--tls-min-version=ssl3.0"],
            &["--auth-http-request-method=put"],
            &["--statsd-address=127.0.0.1:8125"],
            &["--archive-path=a", "--max-bytes-per-file=1073741825"],
            &["--no-such-flag"],
        ] {
            let result = Options::parse_args(std::iter::once("nsqd").chain(args.iter().copied()));
            assert!(result.is_err(), "{args:?}");
        }
    }

    #[test]
    fn the_config_file_fills_in_what_the_command_line_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nsqd.cfg");
        std::fs::write(
            &path,
            "mem_queue_size = 0\nmsg_timeout = \"30s\"\nmax_req_timeout = 5000\nid = 7\n\
             e2e_processing_latency_percentiles = [0.9]\nmax_rdy_count = 10\nunknown_key = 1\n",
        )
        .unwrap();
        let config = format!("--config={}", path.display());
        let o = parse(&[&config, "--max-rdy-count=20"]);
        assert_eq!(o.mem_queue_size, 0);
        assert_eq!(o.msg_timeout, Duration::from_secs(30));
        assert_eq!(o.max_req_timeout, Duration::from_secs(5));
        assert_eq!(o.node_id, Some(7));
        assert_eq!(o.e2e_processing_latency_percentiles, [0.9]);
        assert_eq!(o.max_rdy_count, 20, "the command line wins");

        std::fs::write(&path, "statsd_address = \"127.0.0.1:8125\"\n").unwrap();
        let result = Options::parse_args(["nsqd", config.as_str()]);
        assert!(result.unwrap_err().to_string().contains("statsd_address"));
    }

    #[test]
    fn archive_path_sets_the_engines_archive_directory_from_flag_or_config_file() {
        let o = parse(&["--archive-path=/var/lib/nsq-archive"]);
        let expected = Some(PathBuf::from("/var/lib/nsq-archive"));
        assert_eq!(o.engine_config().archive_dir, expected);
        assert_eq!(parse(&["--archive-path="]).engine_config().archive_dir, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nsqd.cfg");
        std::fs::write(&path, "archive_path = \"/var/lib/nsq-archive\"\n").unwrap();
        let o = parse(&[&format!("--config={}", path.display())]);
        assert_eq!(o.engine_config().archive_dir, expected);
    }

    #[test]
    fn the_version_line_has_nsqds_form() {
        let line = version_line("nsqd");
        assert!(line.starts_with("nsqd v1.3.0 (built w/"), "{line}");
    }
}
