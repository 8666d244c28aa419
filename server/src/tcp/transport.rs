//! The layers IDENTIFY can add under a connection's reader and writer: TLS, then snappy or
//! DEFLATE over it (NSQ.md §2.5). Each upgrade takes the connection's halves apart and puts
//! new ones together. Bytes the command reader had already read past the IDENTIFY body belong
//! to the new layer, so they are handed to it first rather than lost.

use std::io::{self, Cursor};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use protocol::MAX_LINE_BYTES;
use protocol::compression::{Compression, Decompressor, MAX_SNAPPY_CHUNK};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, BufReader, ReadBuf};
use tokio_rustls::TlsAcceptor;

use crate::tls::{HANDSHAKE_TIMEOUT, Session};

pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Sync + Unpin>;
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// The command reader over `read`.
pub(crate) fn command_reader(read: BoxRead) -> BufReader<BoxRead> {
    BufReader::with_capacity(MAX_LINE_BYTES, read)
}

/// A stand-in for a half that is being upgraded.
pub(crate) fn detached_reader() -> BufReader<BoxRead> {
    command_reader(Box::new(tokio::io::empty()))
}

/// The reader's inner stream, with the bytes it had read ahead put back in front.
fn unbuffer(reader: BufReader<BoxRead>) -> BoxRead {
    let ahead = reader.buffer().to_vec();
    let inner = reader.into_inner();
    if ahead.is_empty() { inner } else { Box::new(Cursor::new(ahead).chain(inner)) }
}

/// Runs the server side of a TLS handshake over the connection and returns its new halves.
pub(crate) async fn upgrade_tls(
    config: Arc<rustls::ServerConfig>,
    reader: BufReader<BoxRead>,
    writer: BoxWrite,
) -> io::Result<(BufReader<BoxRead>, BoxWrite, Session)> {
    let stream = tokio::io::join(unbuffer(reader), writer);
    let handshake = TlsAcceptor::from(config).accept(stream);
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let session = Session::of(tls.get_ref().1);
    let (read, write) = tokio::io::split(tls);
    Ok((command_reader(Box::new(read)), Box::new(write), session))
}

/// The command reader, decompressing what arrives from now on.
pub(crate) fn decompressing(
    reader: BufReader<BoxRead>,
    compression: Compression,
) -> BufReader<BoxRead> {
    command_reader(Box::new(Decompressing {
        inner: unbuffer(reader),
        decompressor: Decompressor::new(compression),
        input: Vec::new(),
        used: 0,
        eof: false,
    }))
}

/// How much compressed input is read at a time.
const READ_CHUNK: usize = 16 * 1024;

/// An [`AsyncRead`] of what a compressed stream decodes to.
struct Decompressing {
    inner: BoxRead,
    decompressor: Decompressor,
    /// Compressed bytes read; those before `used` are decoded.
    input: Vec<u8>,
    used: usize,
    eof: bool,
}

impl AsyncRead for Decompressing {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let out = buf.initialize_unfilled();
            if out.is_empty() || this.decompressor.ended() {
                return Poll::Ready(Ok(()));
            }
            let (used, produced) = this.decompressor.decompress(&this.input[this.used..], out)?;
            this.used += used;
            if produced > 0 {
                buf.advance(produced);
                return Poll::Ready(Ok(()));
            }
            if used > 0 {
                continue;
            }
            // What is left is part of a chunk or block: read more behind it.
            this.input.drain(..this.used);
            this.used = 0;
            if this.eof {
                return Poll::Ready(if this.input.is_empty() {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed inside a compressed block",
                    ))
                });
            }
            if this.input.len() > MAX_SNAPPY_CHUNK + READ_CHUNK {
                // Neither codec needs this much input to make progress.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "compressed input makes no progress",
                )));
            }
            let filled = this.input.len();
            this.input.resize(filled + READ_CHUNK, 0);
            let mut read = ReadBuf::new(&mut this.input[filled..]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            let got = read.filled().len();
            this.input.truncate(filled + got);
            ready!(polled)?;
            this.eof = got == 0;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use protocol::compression::Compressor;
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn read_ahead_bytes_reach_the_decompressor() {
        let compression = Compression::Deflate { level: 6 };
        let mut compressor = Compressor::new(compression);
        let compressed = compressor.compress(b"NOP\nPUB t\n").unwrap().to_vec();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        // The plain line and the start of the compressed stream arrive in one read.
        let mut first = b"IDENTIFY\n".to_vec();
        first.extend_from_slice(&compressed[..3]);
        client.write_all(&first).await.unwrap();
        let mut reader = command_reader(Box::new(server));
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        assert_eq!(line, "IDENTIFY\n");
        let mut reader = decompressing(reader, compression);
        client.write_all(&compressed[3..]).await.unwrap();
        drop(client);
        let mut rest = String::new();
        reader.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "NOP\nPUB t\n");
    }

    #[tokio::test]
    async fn a_corrupt_stream_is_an_error_and_a_cut_one_too() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(b"\xff\x06\x00\x00sNaPpY\x00\x09\x00\x00garbage!!").await.unwrap();
        drop(client);
        let mut reader = decompressing(command_reader(Box::new(server)), Compression::Snappy);
        let error = reader.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");

        let wire = Compressor::new(Compression::Snappy).compress(b"NOP\n").unwrap().to_vec();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&wire[..wire.len() - 1]).await.unwrap();
        drop(client);
        let mut reader = decompressing(command_reader(Box::new(server)), Compression::Snappy);
        let error = reader.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
    }
}
