//! The wire: requests in through our bounded decoder, replies out through redis-protocol's encoders.

pub mod decode;
pub mod encode;

pub use decode::{string2ll, Args, DecodeLimits, ProtocolError, RequestDecoder};
pub use encode::{Protocol, Reply};
