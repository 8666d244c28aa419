//! Logging to stderr in nsqd's shape, `[nsqd] <time> INFO: <message>`, at a level that
//! `PUT /config/log_level` can change while running.

use engine::sync::lock;
use std::fmt;
use std::sync::Mutex;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::reload;

type Reload = Box<dyn Fn(LevelFilter) -> Result<(), String> + Send + Sync>;

/// The current log level, and how to change it.
pub struct LogControl {
    level: Mutex<LogLevel>,
    reload: Option<Reload>,
}

impl fmt::Debug for LogControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogControl").field("level", &self.level()).finish_non_exhaustive()
    }
}

/// nsqd's log levels, numbered as nsqd numbers them (`GET /config/log_level` shows the number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Fatal = 5,
}

impl LogLevel {
    pub fn parse(text: &str) -> Option<LogLevel> {
        match text.to_ascii_lowercase().as_str() {
            "debug" => Some(Self::Debug),
            "info" => Some(Self::Info),
            "warn" => Some(Self::Warn),
            "error" => Some(Self::Error),
            "fatal" => Some(Self::Fatal),
            _ => None,
        }
    }

    fn filter(self) -> LevelFilter {
        match self {
            Self::Debug => LevelFilter::DEBUG,
            Self::Info => LevelFilter::INFO,
            Self::Warn => LevelFilter::WARN,
            Self::Error | Self::Fatal => LevelFilter::ERROR,
        }
    }
}

impl LogControl {
    /// A level that changes nothing but itself (for an nsqd whose caller owns logging).
    pub fn fixed(level: LogLevel) -> Self {
        Self { level: Mutex::new(level), reload: None }
    }

    pub fn level(&self) -> LogLevel {
        *lock(&self.level)
    }

    pub fn set_level(&self, level: LogLevel) -> Result<(), String> {
        if let Some(reload) = &self.reload {
            reload(level.filter())?;
        }
        *lock(&self.level) = level;
        Ok(())
    }
}

/// Installs the process's logger: stderr, nsqd's line shape, `prefix` first.
pub fn init(level: LogLevel, prefix: &str) -> LogControl {
    let (filter, handle) = reload::Layer::new(level.filter());
    let format = NsqFormat { prefix: prefix.to_owned() };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().event_format(format).with_writer(std::io::stderr))
        .try_init();
    if installed.is_err() {
        return LogControl::fixed(level);
    }
    let reload: Reload = Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string()));
    LogControl { level: Mutex::new(level), reload: Some(reload) }
}

struct NsqFormat {
    prefix: String,
}

impl<S, N> FormatEvent<S, N> for NsqFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "INFO",
            Level::DEBUG | Level::TRACE => "DEBUG",
        };
        let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        write!(writer, "{}{now} {level}: ", self.prefix)?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
