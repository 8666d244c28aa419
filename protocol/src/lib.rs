//! NSQ's TCP protocol V2 as bytes, with no I/O: shared by nsqd, clients, tests and fuzz targets.
//!
//! - [`frame`]: what the server sends: `[u32 size][i32 type][data]`, and the 26-byte message
//!   header inside message frames. Encoders for the server, a bounded decoder for clients.
//! - [`command`]: what the client sends: a text line split on single spaces, then for some
//!   commands a `[i32 size][body]`. Parsing helpers with NSQ's exact rules (digits-only integers,
//!   16-byte IDs) and encoders for clients.
//! - [`compression`]: snappy and DEFLATE as negotiated in IDENTIFY, for either side.
//! - [`error`]: the `E_*` error codes, their texts and which of them close the connection.
//! - [`identify`]: the IDENTIFY request and response bodies (JSON).
//! - [`lookup`]: nsqlookupd's TCP protocol V1 (IDENTIFY, REGISTER, UNREGISTER, PING).
//! - [`mpub`]: the MPUB body, `[i32 count]([i32 size][bytes])*`, decoded with NSQ's limits.
//!
//! All integers on the wire are big-endian, as NSQ specifies.

// NSQ's wire format is big-endian; the workspace lint guards the little-endian disk format.
#![allow(clippy::big_endian_bytes)]

pub mod command;
pub mod compression;
pub mod error;
pub mod frame;
pub mod identify;
pub mod lookup;
pub mod mpub;

pub use error::{ErrorCode, ProtocolError};
pub use frame::{Frame, FrameType, Message};

/// The four bytes a V2 client sends first.
pub const MAGIC_V2: &[u8; 4] = b"  V2";

/// Response body of a successful command.
pub const OK: &[u8] = b"OK";
/// Response body of a heartbeat, which the client must answer (any command does; NOP is usual).
pub const HEARTBEAT: &[u8] = b"_heartbeat_";
/// Response body of CLS.
pub const CLOSE_WAIT: &[u8] = b"CLOSE_WAIT";
/// Length of a message ID on the wire.
pub const MESSAGE_ID_LEN: usize = 16;
/// Longest command line (NSQ reads lines through a 16 KiB buffer); a longer one closes the
/// connection without an error frame.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
