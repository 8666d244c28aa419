//! One V2 connection: the magic, then the command loop (nsqd's `IOLoop`) beside the message
//! pump. A command's line and body must arrive within two heartbeat intervals of the previous
//! command, or the connection closes. A fatal error is sent as an error frame, then the
//! connection closes; nothing a client sends can affect another connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::Consumer;
use protocol::frame::FrameType;
use protocol::{ErrorCode, MAX_LINE_BYTES, ProtocolError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::parse::Settings;
use super::pump::{self, PumpEvent};
use super::transport::{self, BoxRead};
use super::writer::Writer;
use crate::auth::AuthState;
use crate::clients::Client;
use crate::nsqd::Nsqd;
use crate::options::{DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_OUTPUT_BUFFER_SIZE};

/// How long a new connection may take to send the protocol magic.
const MAGIC_TIMEOUT: Duration = Duration::from_secs(60);
/// The most FINs applied together (see [`Connection::fins`]).
const MAX_PENDING_FINS: usize = 256;
/// How long a closing connection waits for its client to take what is still buffered.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the command loop stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Stop {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no command within {0:?}")]
    ReadTimeout(Duration),
    #[error("command line longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
}

/// The outcome of one command.
pub(crate) enum Failure {
    /// Sent to the client; fatal ones close the connection.
    Protocol(ProtocolError),
    /// The connection is unusable.
    Stop(Stop),
}

impl From<ProtocolError> for Failure {
    fn from(error: ProtocolError) -> Self {
        Failure::Protocol(error)
    }
}

impl From<Stop> for Failure {
    fn from(stop: Stop) -> Self {
        Failure::Stop(stop)
    }
}

pub(crate) struct Connection {
    pub(crate) nsqd: Arc<Nsqd>,
    pub(crate) client: Arc<Client>,
    pub(crate) reader: BufReader<BoxRead>,
    pub(crate) writer: Arc<Mutex<Writer>>,
    pub(crate) settings: Settings,
    /// Whether the pump has had this connection's IDENTIFY (it takes only the first).
    pub(crate) identified: bool,
    pub(crate) consumer: Option<Arc<Consumer>>,
    pub(crate) events: mpsc::UnboundedSender<PumpEvent>,
    /// Tells the pump that RDY or the in-flight count changed.
    pub(crate) wake: Arc<Notify>,
    /// When the current command must have been read.
    pub(crate) deadline: Option<Instant>,
    /// Set once the connection has upgraded to TLS.
    pub(crate) tls: Option<crate::tls::Session>,
    /// The secret of the last AUTH, and what the auth server answered.
    pub(crate) auth_secret: String,
    /// FINs read but not yet applied: consecutive FINs already in the read buffer are applied
    /// together, under one lock of the channel, before anything else is read or run.
    pub(crate) fins: Vec<[u8; protocol::MESSAGE_ID_LEN]>,
    pub(crate) auth: Option<AuthState>,
}

pub(crate) async fn serve(
    nsqd: Arc<Nsqd>,
    stream: TcpStream,
    remote: SocketAddr,
    exit: CancellationToken,
) {
    let (read, write) = stream.into_split();
    let mut reader = transport::command_reader(Box::new(read));
    let mut magic = [0u8; 4];
    let got_magic = tokio::select! {
        () = exit.cancelled() => return,
        read = tokio::time::timeout(MAGIC_TIMEOUT, reader.read_exact(&mut magic)) => {
            matches!(read, Ok(Ok(_)))
        }
    };
    if !got_magic {
        tracing::info!("TCP: client({remote}) closed before sending the protocol magic");
        return;
    }
    let options = &nsqd.options;
    let heartbeat = Some(DEFAULT_HEARTBEAT_INTERVAL);
    let settings = Settings {
        heartbeat_interval: heartbeat,
        output_buffer_size: usize::try_from(DEFAULT_OUTPUT_BUFFER_SIZE).unwrap_or(usize::MAX),
        output_buffer_timeout: Some(options.output_buffer_timeout),
        sample_rate: 0,
        msg_timeout: options.msg_timeout,
    };
    let mut writer = Writer::new(Box::new(write), settings.output_buffer_size, heartbeat);
    if &magic != protocol::MAGIC_V2 {
        tracing::error!(
            "client({remote}) bad protocol magic '{}'",
            String::from_utf8_lossy(&magic)
        );
        let _ = writer.send(FrameType::Error, ErrorCode::BadProtocol.as_str().as_bytes()).await;
        writer.shutdown().await;
        return;
    }
    tracing::info!("CLIENT({remote}): desired protocol magic '  V2'");

    let connect_ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let client = nsqd.clients.register(remote, connect_ts);
    let writer = Arc::new(Mutex::new(writer));
    let (events, events_rx) = mpsc::unbounded_channel();
    let wake = Arc::new(Notify::new());
    let pump = tokio::spawn(pump::run(
        Arc::clone(&writer),
        events_rx,
        Arc::clone(&wake),
        settings,
        exit.clone(),
    ));
    let mut connection = Connection {
        nsqd: Arc::clone(&nsqd),
        client: Arc::clone(&client),
        reader,
        writer: Arc::clone(&writer),
        settings,
        identified: false,
        consumer: None,
        events,
        wake,
        deadline: None,
        tls: None,
        auth_secret: String::new(),
        auth: None,
        fins: Vec::new(),
    };
    let outcome = tokio::select! {
        () = exit.cancelled() => Ok(()),
        outcome = connection.run() => outcome,
    };
    match outcome {
        Ok(()) => tracing::info!("PROTOCOL(V2): [{remote}] exiting ioloop"),
        Err(stop) => tracing::info!("PROTOCOL(V2): [{remote}] exiting ioloop: {stop}"),
    }
    exit.cancel();
    let _ = pump.await;
    // Dropping the consumer hands its in-flight messages back to the channel at once.
    drop(connection);
    nsqd.clients.remove(client.id);
    // What is buffered goes out if the client reads it soon; one that does not read is not
    // waited for (NSQ closes the socket at once).
    let _ = tokio::time::timeout(FINAL_FLUSH_TIMEOUT, async {
        writer.lock().await.shutdown().await;
    })
    .await;
}

impl Connection {
    /// The command loop. `Ok` when the client closed the connection or a fatal error was sent.
    async fn run(&mut self) -> Result<(), Stop> {
        loop {
            if !self.fins.is_empty() && !self.fin_is_next() && !self.apply_fins().await? {
                return Ok(());
            }
            self.deadline = self.settings.heartbeat_interval.map(|h| Instant::now() + 2 * h);
            let Some(line) = self.read_line().await? else { return Ok(()) };
            let line = protocol::command::trim_line(&line);
            let params = protocol::command::split_params(line);
            tracing::debug!(
                "PROTOCOL(V2): [{}] {}",
                self.client.remote,
                String::from_utf8_lossy(line)
            );
            match self.exec(&params).await {
                Ok(Some(response)) => {
                    self.writer.lock().await.send(FrameType::Response, &response).await?;
                }
                Ok(None) => {}
                Err(Failure::Protocol(error)) => {
                    if !self.report(error).await? {
                        return Ok(());
                    }
                }
                Err(Failure::Stop(stop)) => return Err(stop),
            }
        }
    }

    /// Whether the read buffer starts with another whole `FIN <id>\n` that can join the FINs
    /// waiting to be applied.
    fn fin_is_next(&self) -> bool {
        const LEN: usize = b"FIN \n".len() + protocol::MESSAGE_ID_LEN;
        let buffered = self.reader.buffer();
        self.fins.len() < MAX_PENDING_FINS
            && buffered.len() >= LEN
            && buffered.starts_with(b"FIN ")
            && buffered[LEN - 1] == b'\n'
    }

    /// Applies the FINs read so far, sending an error for each that fails, in order. Returns
    /// false if one of those errors is fatal and the connection must close.
    async fn apply_fins(&mut self) -> Result<bool, Stop> {
        let mut errors = Vec::new();
        if let Some(consumer) = &self.consumer {
            let fins = &self.fins;
            consumer.finish_all(fins, |index, error| {
                errors.push(Self::message_failed(ErrorCode::FinFailed, "FIN", &fins[index], error));
            });
        }
        self.fins.clear();
        self.wake.notify_one();
        for error in errors {
            if !self.report(error).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends a command's error to the client. Returns false if it is fatal.
    async fn report(&mut self, error: ProtocolError) -> Result<bool, Stop> {
        tracing::error!("[{}] - {error}", self.client.remote);
        self.writer.lock().await.send(FrameType::Error, &error.to_bytes()).await?;
        Ok(!error.is_fatal())
    }

    /// When the current command must have arrived, and how long that was.
    fn deadline(&self) -> (Option<Instant>, Duration) {
        (self.deadline, self.settings.heartbeat_interval.map_or(Duration::ZERO, |h| 2 * h))
    }

    /// The next command line with its `\n`, or `None` at a clean end of stream.
    async fn read_line(&mut self) -> Result<Option<Vec<u8>>, Stop> {
        let mut line = Vec::new();
        loop {
            let (deadline, limit) = self.deadline();
            let chunk = with_deadline(deadline, limit, self.reader.fill_buf()).await?;
            if chunk.is_empty() {
                return if line.is_empty() {
                    Ok(None)
                } else {
                    Err(Stop::Io(io::ErrorKind::UnexpectedEof.into()))
                };
            }
            let (taken, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(end) => (end + 1, true),
                None => (chunk.len(), false),
            };
            if line.len() + taken > MAX_LINE_BYTES {
                return Err(Stop::LineTooLong);
            }
            line.extend_from_slice(&chunk[..taken]);
            self.reader.consume(taken);
            if done {
                return Ok(Some(line));
            }
        }
    }

    /// A body size field (4 bytes, big-endian `i32`).
    pub(crate) async fn read_size(&mut self) -> Result<i32, Stop> {
        let mut size = [0u8; 4];
        let (deadline, limit) = self.deadline();
        with_deadline(deadline, limit, self.reader.read_exact(&mut size)).await?;
        Ok(protocol::command::body_size(size))
    }

    /// A body of `size` bytes (already checked against its limit).
    pub(crate) async fn read_body(&mut self, size: usize) -> Result<Vec<u8>, Stop> {
        let mut body = vec![0u8; size];
        let (deadline, limit) = self.deadline();
        with_deadline(deadline, limit, self.reader.read_exact(&mut body)).await?;
        Ok(body)
    }
}

/// Runs a read, failing with [`Stop::ReadTimeout`] at `deadline`.
async fn with_deadline<T>(
    deadline: Option<Instant>,
    limit: Duration,
    read: impl Future<Output = io::Result<T>>,
) -> Result<T, Stop> {
    match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline, read).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Stop::ReadTimeout(limit)),
        },
        None => Ok(read.await?),
    }
}
