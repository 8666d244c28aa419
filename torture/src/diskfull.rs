//! Helpers for the disk-full test (`tests/disk_full.rs`), also usable by other harnesses: a
//! tmpfs mount that is unmounted on drop, self-checking message bodies, and a minimal HTTP/1.1
//! client for nsqd's HTTP API.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::{Buf, BufMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A tmpfs mounted on a directory; unmounted (lazily, if busy) when dropped.
#[derive(Debug)]
pub struct TmpfsMount {
    dir: PathBuf,
}

/// Why a tmpfs could not be mounted.
#[derive(Debug)]
pub enum MountError {
    /// Not allowed here (not root, or no `CAP_SYS_ADMIN` in this container).
    NotPermitted(String),
    /// Anything else.
    Failed(String),
}

impl TmpfsMount {
    /// Mounts a tmpfs of `size_bytes` on `dir` (which must exist).
    pub fn mount(dir: &Path, size_bytes: u64) -> Result<Self, MountError> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| MountError::Failed(format!("running mount: {e}")))?;
        if output.status.success() {
            return Ok(Self { dir: dir.to_path_buf() });
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        let lower = stderr.to_lowercase();
        if lower.contains("permission denied")
            || lower.contains("not permitted")
            || lower.contains("must be superuser")
            || lower.contains("only root")
        {
            Err(MountError::NotPermitted(stderr))
        } else {
            Err(MountError::Failed(format!("mount exited with {}: {stderr}", output.status)))
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds it (a child that has not been reaped yet): detach it now,
            // the kernel frees it when the last user goes.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Bytes a [`sequenced_body`] adds to its payload: the sequence number and the CRC.
pub const BODY_OVERHEAD: usize = 8 + 4;

/// A message body that proves itself: `[8B seq][payload][4B CRC-32C of seq and payload]`, the
/// payload `len - 12` bytes derived from `seq` alone, so a reader can rebuild it exactly.
pub fn sequenced_body(seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(BODY_OVERHEAD);
    let mut body = Vec::with_capacity(len);
    body.put_u64(seq);
    let mut rng = fastrand::Rng::with_seed(seq);
    body.extend((0..len - BODY_OVERHEAD).map(|_| rng.u8(..)));
    let crc = crc32c::crc32c(&body);
    body.put_u32(crc);
    body
}

/// The sequence number of a body made by [`sequenced_body`], if it is intact (CRC and the
/// payload it must have).
pub fn check_sequenced_body(body: &[u8]) -> Option<u64> {
    if body.len() < BODY_OVERHEAD {
        return None;
    }
    let (data, mut crc) = body.split_at(body.len() - 4);
    if crc32c::crc32c(data) != crc.get_u32() {
        return None;
    }
    let seq = (&data[..8]).get_u64();
    (sequenced_body(seq, body.len()) == body).then_some(seq)
}

/// An HTTP response: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), e.g.
/// `http(addr, "POST", "/pub?topic=t", b"hello")`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut rest = &raw[end + 4..];
    if !chunked {
        return Ok(HttpResponse { status, body: rest.to_vec() });
    }
    let mut body = Vec::new();
    loop {
        let line_end =
            rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| bad("bad chunk size"))?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(HttpResponse { status, body });
        }
        let chunk = rest.get(..size).ok_or_else(|| bad("short chunk"))?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or_else(|| bad("short chunk"))?;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sequenced_bodies_check_themselves() {
        for (seq, len) in [(0, 0), (1, 12), (7, 13), (u64::MAX, 4000)] {
            let body = sequenced_body(seq, len);
            assert_eq!(body.len(), len.max(BODY_OVERHEAD));
            assert_eq!(check_sequenced_body(&body), Some(seq));
            let mut bad = body.clone();
            let last = bad.len() - 1;
            bad[last / 2] ^= 1;
            assert_eq!(check_sequenced_body(&bad), None);
        }
    }

    #[test]
    fn responses_parse_plain_and_chunked() {
        let plain = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nhello";
        let r = parse_response(plain).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (500, &b"hello"[..]));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse_response(chunked).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
    }
}
