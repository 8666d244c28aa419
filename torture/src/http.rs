//! Just enough HTTP/1.1 for nsqd's API: create a topic and its channels, read channel depths.
//! One request per connection (`Connection: close`), bounded by a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `method path` and returns the status and body.
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .with_context(|| format!("{method} {path}: no answer in {TIMEOUT:?}"))??;
    parse_response(&raw).with_context(|| format!("{method} {path}"))
}

fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).context("headers are not UTF-8")?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Ok((status, body))
}

fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let end = raw.windows(2).position(|w| w == b"\r\n").context("chunk size line")?;
        let size_text = std::str::from_utf8(&raw[..end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        raw = &raw[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if raw.len() < size {
            bail!("chunk of {size} bytes cut short");
        }
        body.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
}

/// POSTs `path` and expects 200.
pub async fn post(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let (status, body) = request(addr, "POST", path).await?;
    if status != 200 {
        bail!("POST {path}: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

/// One channel's queue counts, from `/stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCounts {
    pub name: String,
    pub depth: u64,
    pub in_flight: u64,
    pub deferred: u64,
}

impl ChannelCounts {
    /// Nothing left to deliver or to finish.
    pub fn is_empty(&self) -> bool {
        self.depth == 0 && self.in_flight == 0 && self.deferred == 0
    }
}

/// The channels of `topic` with their counts.
pub async fn channel_counts(addr: SocketAddr, topic: &str) -> anyhow::Result<Vec<ChannelCounts>> {
    let (status, body) = request(addr, "GET", &format!("/stats?format=json&topic={topic}")).await?;
    if status != 200 {
        bail!("GET /stats: {status}");
    }
    let stats: serde_json::Value = serde_json::from_slice(&body).context("stats JSON")?;
    let topics = stats.get("topics").and_then(|t| t.as_array()).context("stats: no topics")?;
    let Some(ours) =
        topics.iter().find(|t| t.get("topic_name").and_then(|n| n.as_str()) == Some(topic))
    else {
        return Ok(Vec::new());
    };
    let number =
        |c: &serde_json::Value, field: &str| c.get(field).and_then(|v| v.as_u64()).unwrap_or(0);
    Ok(ours
        .get("channels")
        .and_then(|c| c.as_array())
        .map(|channels| {
            channels
                .iter()
                .map(|c| ChannelCounts {
                    name: c.get("channel_name").and_then(|n| n.as_str()).unwrap_or("").to_owned(),
                    depth: number(c, "depth"),
                    in_flight: number(c, "in_flight_count"),
                    deferred: number(c, "deferred_count"),
                })
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn responses_parse_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (200, b"{}".to_vec()));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (404, b"abcde".to_vec()));
    }
}
