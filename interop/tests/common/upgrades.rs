//! The upgrades IDENTIFY negotiates (TLS, then snappy or DEFLATE over it): what a test has its
//! clients ask for, and what nsqd's `/stats` says each connected client got. A test compares
//! the two while its clients are connected, so an upgrade that silently did not happen fails it.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Snappy,
    Deflate,
}

/// What a test's clients ask for in IDENTIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub tls: bool,
    pub compression: Option<Compression>,
}

impl Features {
    pub const PLAIN: Self = Self { tls: false, compression: None };
    pub const TLS: Self = Self { tls: true, compression: None };
    pub const SNAPPY: Self = Self { tls: false, compression: Some(Compression::Snappy) };
    pub const DEFLATE: Self = Self { tls: false, compression: Some(Compression::Deflate) };
    pub const TLS_SNAPPY: Self = Self { tls: true, compression: Some(Compression::Snappy) };
    pub const TLS_DEFLATE: Self = Self { tls: true, compression: Some(Compression::Deflate) };
}

/// One client's upgrades as `/stats` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Negotiated {
    pub tls: bool,
    /// `TLS1.2` or `TLS1.3`; empty without TLS.
    pub tls_version: String,
    pub snappy: bool,
    pub deflate: bool,
}

impl Negotiated {
    /// What a client that asked for `features`, and speaks `tls_version` at best, must have got.
    pub fn expected(features: Features, tls_version: &str) -> Self {
        Self {
            tls: features.tls,
            tls_version: if features.tls { tls_version.to_owned() } else { String::new() },
            snappy: features.compression == Some(Compression::Snappy),
            deflate: features.compression == Some(Compression::Deflate),
        }
    }
}

/// The connected clients of one channel in `/stats`: its consumers, and every client that has
/// published (nsqd's `producers`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Clients {
    pub consumers: Vec<Negotiated>,
    pub producers: Vec<Negotiated>,
}

impl Clients {
    /// Picks the clients out of a `/stats?format=json` document.
    pub fn from_stats(stats: &serde_json::Value, topic: &str, channel: &str) -> Self {
        let parse = |clients: Option<&serde_json::Value>| -> Vec<Negotiated> {
            clients
                .and_then(serde_json::Value::as_array)
                .map(|list| {
                    list.iter()
                        .map(|c| serde_json::from_value(c.clone()).expect("a client in /stats"))
                        .collect()
                })
                .unwrap_or_default()
        };
        let channel = stats["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["topic_name"] == topic)
            .flat_map(|t| t["channels"].as_array().into_iter().flatten())
            .find(|c| c["channel_name"] == channel);
        Self {
            consumers: parse(channel.map(|c| &c["clients"])),
            producers: parse(Some(&stats["producers"])),
        }
    }
}
