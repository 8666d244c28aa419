//! The stream compression a V2 connection can negotiate in IDENTIFY, with no I/O: snappy's
//! framing (stream) format, or raw DEFLATE (RFC 1951, no zlib header). Each side compresses what
//! it sends with a [`Compressor`] and decompresses what it receives with a [`Decompressor`].
//!
//! The codecs are the `snap` and `flate2` crates; this module only adapts them to a byte
//! stream that arrives in pieces. A [`Compressor`] flushes after every call (a sync flush for
//! DEFLATE, a finished chunk for snappy), so the peer can decode everything sent so far, as
//! nsqd's writers do on each buffer flush. A [`Decompressor`] takes whatever bytes have arrived
//! and writes at most the output it is given room for, so a small input that inflates to a
//! lot (a "compression bomb") never makes it allocate more than its caller asked for.

use std::io::{self, Read, Write};

/// Which compression, as negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Snappy,
    /// `level` in 1..=9 (nsqd caps it with `--max-deflate-level`).
    Deflate {
        level: u32,
    },
}

impl Compression {
    /// The name nsqd logs and `/stats` uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Snappy => "snappy",
            Self::Deflate { .. } => "deflate",
        }
    }
}

/// Compresses one direction of a connection.
pub struct Compressor {
    encoder: Encoder,
}

enum Encoder {
    Snappy(Box<snap::write::FrameEncoder<Vec<u8>>>),
    Deflate(flate2::write::DeflateEncoder<Vec<u8>>),
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.encoder {
            Encoder::Snappy(_) => "snappy",
            Encoder::Deflate(_) => "deflate",
        };
        f.debug_struct("Compressor").field("codec", &name).finish()
    }
}

impl Compressor {
    pub fn new(compression: Compression) -> Self {
        let encoder = match compression {
            Compression::Snappy => {
                Encoder::Snappy(Box::new(snap::write::FrameEncoder::new(Vec::new())))
            }
            Compression::Deflate { level } => Encoder::Deflate(flate2::write::DeflateEncoder::new(
                Vec::new(),
                flate2::Compression::new(level),
            )),
        };
        Self { encoder }
    }

    /// Compresses `data` and flushes, returning the bytes to send (valid until the next call).
    /// The stream state carries over between calls, as on the wire.
    pub fn compress(&mut self, data: &[u8]) -> io::Result<&[u8]> {
        match &mut self.encoder {
            Encoder::Snappy(encoder) => {
                encoder.get_mut().clear();
                encoder.write_all(data)?;
                encoder.flush()?;
                Ok(encoder.get_ref())
            }
            Encoder::Deflate(encoder) => {
                encoder.get_mut().clear();
                encoder.write_all(data)?;
                encoder.flush()?;
                Ok(encoder.get_ref())
            }
        }
    }
}

/// The largest snappy chunk `snap` decodes (the compressed size of its largest block, 64 KiB);
/// a longer chunk is refused before it is buffered.
pub const MAX_SNAPPY_CHUNK: usize = 76_490;

/// Decompresses one direction of a connection.
pub struct Decompressor {
    decoder: Decoder,
}

enum Decoder {
    /// The decoder reads whole chunks from a feed that holds at most one at a time, so a chunk
    /// split across reads is never half-consumed.
    Snappy(Box<snap::read::FrameDecoder<ChunkFeed>>),
    Deflate {
        inflate: flate2::Decompress,
        ended: bool,
    },
}

impl std::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.decoder {
            Decoder::Snappy(_) => "snappy",
            Decoder::Deflate { .. } => "deflate",
        };
        f.debug_struct("Decompressor").field("codec", &name).finish()
    }
}

/// One whole snappy chunk (header included), read by the frame decoder.
#[derive(Debug, Default)]
struct ChunkFeed {
    chunk: Vec<u8>,
    read: usize,
}

impl Read for ChunkFeed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.chunk[self.read..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.read += n;
        Ok(n)
    }
}

fn corrupt(codec: &str, error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("corrupt {codec} stream: {error}"))
}

impl Decompressor {
    pub fn new(compression: Compression) -> Self {
        let decoder = match compression {
            Compression::Snappy => {
                Decoder::Snappy(Box::new(snap::read::FrameDecoder::new(ChunkFeed::default())))
            }
            Compression::Deflate { .. } => {
                Decoder::Deflate { inflate: flate2::Decompress::new(false), ended: false }
            }
        };
        Self { decoder }
    }

    /// Decompresses from `input` into `out`, returning how many bytes of `input` were used and
    /// how many of `out` were written. `(0, 0)` with room in `out` means `input` holds only
    /// part of what the decoder needs next: call again with more. After the end of a DEFLATE
    /// stream (the peer closed it) nothing more is produced; see [`Self::ended`].
    ///
    /// A corrupt stream is an error of kind [`io::ErrorKind::InvalidData`]; the stream cannot
    /// be used after it.
    pub fn decompress(&mut self, input: &[u8], out: &mut [u8]) -> io::Result<(usize, usize)> {
        if out.is_empty() {
            return Ok((0, 0));
        }
        match &mut self.decoder {
            Decoder::Snappy(decoder) => {
                let mut consumed = 0;
                loop {
                    // The feed is empty here: each read takes whole chunks until one yields
                    // output (kept inside the decoder) or the feed runs out.
                    let produced = decoder.read(out).map_err(|e| corrupt("snappy", e))?;
                    if produced > 0 {
                        return Ok((consumed, produced));
                    }
                    let rest = &input[consumed..];
                    let Some(header) = rest.get(..4) else { return Ok((consumed, 0)) };
                    let len = usize::from(header[1])
                        | usize::from(header[2]) << 8
                        | usize::from(header[3]) << 16;
                    if len > MAX_SNAPPY_CHUNK {
                        return Err(corrupt(
                            "snappy",
                            format!("chunk of {len} bytes is over the limit of {MAX_SNAPPY_CHUNK}"),
                        ));
                    }
                    let Some(chunk) = rest.get(..4 + len) else { return Ok((consumed, 0)) };
                    let feed = decoder.get_mut();
                    feed.chunk.clear();
                    feed.chunk.extend_from_slice(chunk);
                    feed.read = 0;
                    consumed += chunk.len();
                }
            }
            Decoder::Deflate { inflate, ended } => {
                if *ended {
                    return Ok((0, 0));
                }
                let (before_in, before_out) = (inflate.total_in(), inflate.total_out());
                let status = inflate
                    .decompress(input, out, flate2::FlushDecompress::None)
                    .map_err(|e| corrupt("deflate", e))?;
                *ended = status == flate2::Status::StreamEnd;
                let consumed = usize::try_from(inflate.total_in() - before_in).unwrap_or(0);
                let produced = usize::try_from(inflate.total_out() - before_out).unwrap_or(0);
                Ok((consumed, produced))
            }
        }
    }

    /// Whether the peer ended the stream (only DEFLATE streams have an end).
    pub fn ended(&self) -> bool {
        matches!(self.decoder, Decoder::Deflate { ended: true, .. })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
    use super::*;
    use proptest::prelude::*;

    const CODECS: [Compression; 3] =
        [Compression::Snappy, Compression::Deflate { level: 1 }, Compression::Deflate { level: 9 }];

    /// Decompresses everything `wire` holds, fed `split` bytes at a time into an output of
    /// `room` bytes per call.
    fn decode_all(
        compression: Compression,
        wire: &[u8],
        split: usize,
        room: usize,
    ) -> io::Result<Vec<u8>> {
        let mut decompressor = Decompressor::new(compression);
        let mut pending: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut scratch = vec![0u8; room];
        for piece in wire.chunks(split.max(1)) {
            pending.extend_from_slice(piece);
            loop {
                let (used, produced) = decompressor.decompress(&pending, &mut scratch)?;
                pending.drain(..used);
                out.extend_from_slice(&scratch[..produced]);
                if used == 0 && produced == 0 {
                    break;
                }
            }
        }
        assert!(pending.is_empty(), "{} bytes left undecoded", pending.len());
        Ok(out)
    }

    fn encode_all(compression: Compression, messages: &[Vec<u8>]) -> Vec<u8> {
        let mut compressor = Compressor::new(compression);
        let mut wire = Vec::new();
        for message in messages {
            wire.extend_from_slice(compressor.compress(message).unwrap());
        }
        wire
    }

    proptest! {
        #[test]
        fn what_is_compressed_comes_back_however_it_is_split(
            messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3000), 1..8),
            split in 1usize..600,
            room in 1usize..5000,
        ) {
            for compression in CODECS {
                let wire = encode_all(compression, &messages);
                let got = decode_all(compression, &wire, split, room).unwrap();
                prop_assert_eq!(got, messages.concat());
            }
        }
    }

    #[test]
    fn each_compress_call_is_decodable_on_its_own_arrival() {
        // The peer must be able to act on each flush before the next one is sent.
        for compression in CODECS {
            let mut compressor = Compressor::new(compression);
            let mut decompressor = Decompressor::new(compression);
            let mut scratch = vec![0u8; 1 << 16];
            for message in [&b"OK"[..], b"PUB t\n", &[7u8; 100_000]] {
                let mut wire = compressor.compress(message).unwrap().to_vec();
                let mut got = Vec::new();
                loop {
                    let (used, produced) = decompressor.decompress(&wire, &mut scratch).unwrap();
                    wire.drain(..used);
                    got.extend_from_slice(&scratch[..produced]);
                    if used == 0 && produced == 0 {
                        break;
                    }
                }
                assert_eq!(got, message, "{compression:?}");
                assert!(wire.is_empty());
            }
        }
    }

    #[test]
    fn large_messages_compress() {
        let body: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        for compression in CODECS {
            let wire = encode_all(compression, std::slice::from_ref(&body));
            assert!(wire.len() < body.len() / 2, "{compression:?}: {}", wire.len());
            assert_eq!(decode_all(compression, &wire, 1500, 16 * 1024).unwrap(), body);
        }
    }

    #[test]
    fn output_is_bounded_by_the_room_given() {
        // 4 MiB of zeros deflate to a few KiB; each call writes at most the room it has.
        let wire = encode_all(Compression::Deflate { level: 9 }, &[vec![0u8; 4 << 20]]);
        assert!(wire.len() < 10_000);
        let mut decompressor = Decompressor::new(Compression::Deflate { level: 9 });
        let mut scratch = [0u8; 1000];
        let (_, produced) = decompressor.decompress(&wire, &mut scratch).unwrap();
        assert!(produced <= 1000 && produced > 0);
    }

    #[test]
    fn corrupt_streams_are_errors() {
        let wire = encode_all(Compression::Snappy, &[b"hello hello hello".to_vec()]);
        let mut flipped = wire.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        let error = decode_all(Compression::Snappy, &flipped, 1024, 1024).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().starts_with("corrupt snappy stream"), "{error}");

        // No stream identifier first.
        let error = decode_all(Compression::Snappy, b"\x00\x05\x00\x00abcde", 64, 64).unwrap_err();
        assert!(error.to_string().contains("snappy"), "{error}");

        // A chunk declaring more than the decoder accepts is refused from its header.
        let error =
            Decompressor::new(Compression::Snappy).decompress(b"\xff\x00\x00\x02", &mut [0; 8]);
        assert!(error.unwrap_err().to_string().contains("over the limit"));

        // A reserved block type (3) in DEFLATE.
        let error = decode_all(Compression::Deflate { level: 6 }, &[0x07, 0, 0], 8, 8).unwrap_err();
        assert!(error.to_string().starts_with("corrupt deflate stream"), "{error}");
    }

    #[test]
    fn a_finished_deflate_stream_ends() {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"bye").unwrap();
        let wire = encoder.finish().unwrap();
        let mut decompressor = Decompressor::new(Compression::Deflate { level: 6 });
        let mut out = [0u8; 16];
        let (used, produced) = decompressor.decompress(&wire, &mut out).unwrap();
        assert_eq!((used, &out[..produced]), (wire.len(), &b"bye"[..]));
        assert!(decompressor.ended());
        assert_eq!(decompressor.decompress(b"more", &mut out).unwrap(), (0, 0));
    }
}
