//! Incremental, bounded decoder for client requests: RESP arrays of bulk strings and inline lines.
// PLACEHOLDER: the real decoder replaces this file.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// Limits on what one request may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Longest bulk string (Redis: proto-max-bulk-len).
    pub max_bulk_len: usize,
    /// Most arguments in one request (Redis: 1024*1024 multibulk items).
    pub max_args: usize,
    /// Longest inline line (Redis: PROTO_INLINE_MAX_SIZE).
    pub max_inline_len: usize,
    /// Most bytes one request may take on the wire (Redis: client-query-buffer-limit).
    pub max_request_len: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bulk_len: 64 * 1024,
            max_args: 1024,
            max_inline_len: 64 * 1024,
            max_request_len: 1024 * 1024,
        }
    }
}

/// Malformed input.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Reading from the socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Bad input.
    #[error("{0}")]
    Bad(String),
}

/// The decoder.
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: DecodeLimits,
}

impl RequestDecoder {
    /// A decoder with these limits.
    pub fn new(limits: DecodeLimits) -> Self {
        RequestDecoder { limits }
    }
    /// True while part of a request has been read but not all of it.
    pub fn is_mid_request(&self) -> bool {
        false
    }
}

impl Decoder for RequestDecoder {
    type Item = Vec<Bytes>;
    type Error = ProtocolError;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let _ = self.limits;
        let Some(pos) = src.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line = src.split_to(pos + 1).freeze();
        Ok(Some(
            line.split(|b| *b == b' ' || *b == b'\r' || *b == b'\n')
                .filter(|s| !s.is_empty())
                .map(|s| Bytes::copy_from_slice(s))
                .collect(),
        ))
    }
}
