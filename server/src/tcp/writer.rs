//! The connection's output: frames appended to a buffer and written by whoever holds the
//! writer. Responses and errors are written at once; messages wait in the buffer until it
//! holds `output_buffer_size` bytes or the pump flushes (not ready, or its timer), as nsqd
//! does. Every write has the heartbeat interval as its deadline. After a compression upgrade
//! each flush is compressed as one piece, so the client can decode it on arrival.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use engine::Delivery;
use protocol::compression::{Compression, Compressor};
use protocol::frame::{self, FrameType};
use tokio::io::AsyncWriteExt;

use super::transport::BoxWrite;

/// A buffer that grew past this is given back after a flush (a single large message).
const RETAINED_BUFFER_BYTES: usize = 256 * 1024;

pub(crate) struct Writer {
    io: BoxWrite,
    buf: BytesMut,
    buffer_size: usize,
    write_timeout: Option<Duration>,
    compressor: Option<Compressor>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("buffered", &self.buf.len())
            .field("buffer_size", &self.buffer_size)
            .finish_non_exhaustive()
    }
}

impl Writer {
    pub(crate) fn new(io: BoxWrite, buffer_size: usize, write_timeout: Option<Duration>) -> Self {
        Self { io, buf: BytesMut::new(), buffer_size, write_timeout, compressor: None }
    }

    /// Takes the stream out (for a TLS upgrade), leaving one that discards what it is given.
    pub(crate) fn take_io(&mut self) -> BoxWrite {
        std::mem::replace(&mut self.io, Box::new(tokio::io::sink()))
    }

    pub(crate) fn set_io(&mut self, io: BoxWrite) {
        self.io = io;
    }

    /// Compresses everything written from now on.
    pub(crate) fn compress(&mut self, compression: Compression) {
        self.compressor = Some(Compressor::new(compression));
    }

    pub(crate) fn configure(&mut self, buffer_size: usize, write_timeout: Option<Duration>) {
        self.buffer_size = buffer_size;
        self.write_timeout = write_timeout;
    }

    /// Writes a response or error frame, and everything buffered before it.
    pub(crate) async fn send(&mut self, frame_type: FrameType, data: &[u8]) -> io::Result<()> {
        frame::put_frame(&mut self.buf, frame_type, data);
        self.flush().await
    }

    /// Buffers a message frame, writing when the buffer is full.
    pub(crate) async fn send_message(&mut self, delivery: &Delivery) -> io::Result<()> {
        frame::put_message(
            &mut self.buf,
            delivery.timestamp_ns,
            delivery.attempts,
            &delivery.id,
            &delivery.body,
        );
        if self.buf.len() >= self.buffer_size { self.flush().await } else { Ok(()) }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let write = async {
            match &mut self.compressor {
                Some(compressor) => self.io.write_all(compressor.compress(&self.buf)?).await?,
                None => self.io.write_all(&self.buf).await?,
            }
            self.io.flush().await
        };
        match self.write_timeout {
            Some(limit) => tokio::time::timeout(limit, write)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))??,
            None => write.await?,
        }
        self.buf.clear();
        if self.buf.capacity() > RETAINED_BUFFER_BYTES {
            self.buf = BytesMut::new();
        }
        Ok(())
    }

    pub(crate) async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}
