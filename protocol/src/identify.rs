//! The IDENTIFY bodies. The request is JSON whose unknown keys are ignored; the response is
//! JSON when the client set `feature_negotiation`, with exactly nsqd's keys.

use serde::{Deserialize, Deserializer, Serialize};

/// `null` reads as the type's zero value.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// What a client may say about itself. Missing keys and `null` values take their zero value (as
/// Go's decoder leaves them; tokio-nsq sends `"sample_rate":null`), which for the tunables means
/// "the server's default"; `-1` disables heartbeats, output buffering or its timed flush.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentifyRequest {
    #[serde(deserialize_with = "null_as_default")]
    pub client_id: String,
    #[serde(deserialize_with = "null_as_default")]
    pub hostname: String,
    #[serde(deserialize_with = "null_as_default")]
    pub user_agent: String,
    #[serde(deserialize_with = "null_as_default")]
    pub feature_negotiation: bool,
    /// Milliseconds.
    #[serde(deserialize_with = "null_as_default")]
    pub heartbeat_interval: i64,
    /// Bytes.
    #[serde(deserialize_with = "null_as_default")]
    pub output_buffer_size: i64,
    /// Milliseconds.
    #[serde(deserialize_with = "null_as_default")]
    pub output_buffer_timeout: i64,
    #[serde(deserialize_with = "null_as_default")]
    pub tls_v1: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub snappy: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub deflate: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub deflate_level: i64,
    /// Percent of messages to deliver, 0 (all) to 99.
    #[serde(deserialize_with = "null_as_default")]
    pub sample_rate: i32,
    /// Milliseconds.
    #[serde(deserialize_with = "null_as_default")]
    pub msg_timeout: i64,
    #[serde(deserialize_with = "null_as_default")]
    pub topology_region: String,
    #[serde(deserialize_with = "null_as_default")]
    pub topology_zone: String,
}

/// The negotiated settings, sent back in plain text before any upgrade.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifyResponse {
    pub max_rdy_count: i64,
    pub version: String,
    /// Milliseconds.
    pub max_msg_timeout: i64,
    /// Milliseconds: the timeout this connection's messages get.
    pub msg_timeout: i64,
    pub tls_v1: bool,
    pub deflate: bool,
    pub deflate_level: i64,
    pub max_deflate_level: i64,
    pub snappy: bool,
    pub sample_rate: i32,
    pub auth_required: bool,
    pub output_buffer_size: i64,
    /// Milliseconds.
    pub output_buffer_timeout: i64,
    pub topology_region: String,
    pub topology_zone: String,
}

/// The response to a successful AUTH.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthResponse {
    pub identity: String,
    pub identity_url: String,
    pub permission_count: i64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn requests_ignore_unknown_keys_and_default_missing_ones() {
        let request: IdentifyRequest = serde_json::from_str(
            r#"{"client_id":"c","feature_negotiation":true,"heartbeat_interval":-1,"long_id":"x"}"#,
        )
        .unwrap();
        assert_eq!(request.client_id, "c");
        assert!(request.feature_negotiation);
        assert_eq!(request.heartbeat_interval, -1);
        assert_eq!(request.msg_timeout, 0);
        assert!(serde_json::from_str::<IdentifyRequest>(r#"{"snappy":"yes"}"#).is_err());
    }

    #[test]
    fn null_values_read_as_zero_as_in_go() {
        let request: IdentifyRequest = serde_json::from_str(
            r#"{"client_id":null,"hostname":"h","feature_negotiation":true,"sample_rate":null,
                "heartbeat_interval":null,"snappy":null}"#,
        )
        .unwrap();
        assert_eq!(request.client_id, "");
        assert_eq!(request.hostname, "h");
        assert_eq!((request.sample_rate, request.heartbeat_interval), (0, 0));
        assert!(!request.snappy);
    }

    #[test]
    fn the_response_has_nsqds_keys_in_nsqds_order() {
        let json = serde_json::to_string(&IdentifyResponse::default()).unwrap();
        let keys: Vec<&str> =
            json.split('"').skip(1).step_by(2).filter(|k| !k.is_empty()).collect();
        assert_eq!(
            keys,
            [
                "max_rdy_count",
                "version",
                "max_msg_timeout",
                "msg_timeout",
                "tls_v1",
                "deflate",
                "deflate_level",
                "max_deflate_level",
                "snappy",
                "sample_rate",
                "auth_required",
                "output_buffer_size",
                "output_buffer_timeout",
                "topology_region",
                "topology_zone"
            ]
        );
    }
}
