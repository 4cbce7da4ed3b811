//! The wire: requests in through our bounded decoder, replies out through redis-protocol's encoders.

pub mod decode;
pub mod encode;

pub use decode::{string2ll, DecodeLimits, ProtocolError, RequestDecoder, SharedWords};
pub use encode::{Protocol, Reply};
