//! Replies: the `Reply` value every command returns, encoded as RESP2 or RESP3 by redis-protocol.

use std::borrow::Cow;
use std::io::Write;
use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame as Frame2;
use redis_protocol::resp3::types::{BytesFrame as Frame3, FrameMap, FrameSet, VerbatimStringFormat};

use crate::announce::Announce;

/// The reply protocol a connection speaks, chosen with HELLO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2, every connection's start.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

impl Protocol {
    /// The number HELLO and CLIENT INFO show.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// One reply, independent of the protocol it is sent in.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK` and its kind.
    Simple(Cow<'static, str>),
    /// An error; the text starts with its code (`ERR`, `NOAUTH`, ...).
    Error(Cow<'static, str>),
    /// An integer.
    Integer(i64),
    /// A binary-safe string.
    Bulk(Bytes),
    /// Nothing: `$-1` in RESP2, `_` in RESP3.
    Null,
    /// An ordered list.
    Array(Vec<Reply>),
    /// Key-value pairs: a map in RESP3, a flat array in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// Pairs in order, as Redis answers `WITHSCORES`: a flat array in RESP2, an array of two-element arrays in
    /// RESP3.
    Pairs(Vec<(Reply, Reply)>),
    /// An unordered set: a set in RESP3, an array in RESP2.
    Set(Vec<Reply>),
    /// Text for people (INFO, CLIENT INFO): verbatim in RESP3, a bulk string in RESP2.
    Verbatim(String),
    /// An announce address as a bulk string, written straight into the output: DISCOVER's answer costs no
    /// allocation.
    Announce(Announce),
}

impl Reply {
    /// `+OK`.
    pub const fn ok() -> Reply {
        Reply::Simple(Cow::Borrowed("OK"))
    }

    /// An error reply; line breaks become spaces, as Redis does, so the reply stays one line.
    pub fn error(text: impl Into<Cow<'static, str>>) -> Reply {
        let text = text.into();
        if text.contains(['\r', '\n']) {
            Reply::Error(Cow::Owned(text.replace(['\r', '\n'], " ")))
        } else {
            Reply::Error(text)
        }
    }

    /// A bulk string from text.
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(s.into()))
    }

    /// A bulk string that borrows nothing and copies nothing.
    pub const fn static_text(s: &'static str) -> Reply {
        Reply::Bulk(Bytes::from_static(s.as_bytes()))
    }

    /// True for error replies.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    fn to_resp2(&self) -> Frame2 {
        match self {
            Reply::Simple(s) => Frame2::SimpleString(Bytes::copy_from_slice(one_line(s).as_bytes())),
            Reply::Error(s) => Frame2::Error(one_line(s).as_ref().into()),
            Reply::Integer(i) => Frame2::Integer(*i),
            Reply::Bulk(b) => Frame2::BulkString(b.clone()),
            Reply::Null => Frame2::Null,
            Reply::Array(items) | Reply::Set(items) => Frame2::Array(items.iter().map(Reply::to_resp2).collect()),
            Reply::Map(pairs) | Reply::Pairs(pairs) => {
                Frame2::Array(pairs.iter().flat_map(|(k, v)| [k.to_resp2(), v.to_resp2()]).collect())
            }
            Reply::Verbatim(s) => Frame2::BulkString(Bytes::copy_from_slice(s.as_bytes())),
            Reply::Announce(a) => Frame2::BulkString(Bytes::from(a.to_string())),
        }
    }

    fn to_resp3(&self) -> Frame3 {
        let attributes = None;
        match self {
            Reply::Simple(s) => {
                Frame3::SimpleString { data: Bytes::copy_from_slice(one_line(s).as_bytes()), attributes }
            }
            Reply::Error(s) => Frame3::SimpleError { data: one_line(s).as_ref().into(), attributes },
            Reply::Integer(i) => Frame3::Number { data: *i, attributes },
            Reply::Bulk(b) => Frame3::BlobString { data: b.clone(), attributes },
            Reply::Null => Frame3::Null,
            Reply::Array(items) => Frame3::Array { data: items.iter().map(Reply::to_resp3).collect(), attributes },
            Reply::Pairs(pairs) => Frame3::Array {
                data: pairs
                    .iter()
                    .map(|(a, b)| Frame3::Array { data: vec![a.to_resp3(), b.to_resp3()], attributes: None })
                    .collect(),
                attributes,
            },
            Reply::Set(items) => {
                let data: FrameSet<Frame3> = items.iter().map(Reply::to_resp3).collect();
                Frame3::Set { data, attributes }
            }
            Reply::Map(pairs) => {
                let data: FrameMap<Frame3, Frame3> = pairs.iter().map(|(k, v)| (k.to_resp3(), v.to_resp3())).collect();
                Frame3::Map { data, attributes }
            }
            Reply::Verbatim(s) => Frame3::VerbatimString {
                data: Bytes::copy_from_slice(s.as_bytes()),
                format: VerbatimStringFormat::Text,
                attributes,
            },
            Reply::Announce(a) => Frame3::BlobString { data: Bytes::from(a.to_string()), attributes },
        }
    }

    /// Appends this reply, encoded in `protocol`, to `dst`.
    pub fn encode(&self, protocol: Protocol, dst: &mut BytesMut) {
        // Fast paths for the replies that dominate traffic; byte-identical to the encoder's output.
        match self {
            Reply::Bulk(b) => return encode_bulk(b, dst),
            Reply::Announce(a) => return encode_announce(*a, dst),
            Reply::Simple(s) if !s.bytes().any(|b| b == b'\r' || b == b'\n') => {
                dst.reserve(s.len() + 3);
                dst.put_u8(b'+');
                put_short(dst, s.as_bytes());
                dst.put_slice(b"\r\n");
                return;
            }
            _ => {}
        }
        // The encoders only fail on a buffer too small, and extend_encode grows the buffer first.
        let result = match protocol {
            Protocol::Resp2 => redis_protocol::resp2::encode::extend_encode(dst, &self.to_resp2(), false),
            Protocol::Resp3 => redis_protocol::resp3::encode::complete::extend_encode(dst, &self.to_resp3(), false),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "reply could not be encoded");
        }
    }
}

/// `$<len>\r\n<bytes>\r\n`, the same in RESP2 and RESP3.
fn encode_bulk(b: &[u8], dst: &mut BytesMut) {
    let mut head = [0u8; BULK_HEAD_MAX_LEN];
    head[0] = b'$';
    let len = put_decimal(&mut head, 1, b.len() as u64);
    head[len..len + 2].copy_from_slice(b"\r\n");
    dst.reserve(len + 2 + b.len() + 2);
    put_short(dst, &head[..len + 2]);
    put_short(dst, b);
    dst.put_slice(b"\r\n");
}

/// Room for `$`, the longest length (20 digits) and CRLF.
const BULK_HEAD_MAX_LEN: usize = 24;

/// Room for the longest announce string: an IPv6 address (45), `:65535@65535` (12).
const ANNOUNCE_MAX_LEN: usize = 64;

/// Where an announce's text starts in its reply: after `$`, its length (two digits at most: the text is shorter
/// than 100 bytes) and CRLF.
const ANNOUNCE_AT: usize = 5;

/// DISCOVER's answer as a bulk string, assembled on the stack and appended in one copy: no allocation, and no
/// `fmt` for an IPv4 address (the hot path); byte-identical to `Announce`'s `Display`.
fn encode_announce(a: Announce, dst: &mut BytesMut) {
    // One byte past the window, for a header that starts a byte late.
    let mut out = [0u8; ANNOUNCE_WINDOW + 1];
    let mut end = match a.ip {
        IpAddr::V4(ip) => {
            let mut end = ANNOUNCE_AT;
            for octet in ip.octets() {
                // Each octet's digits and a dot, then only its own length kept: the next overwrites the rest.
                let [digits @ .., len] = OCTETS[usize::from(octet)];
                out[end..end + 4].copy_from_slice(&digits);
                end += usize::from(len);
            }
            // No dot after the last octet.
            end - 1
        }
        IpAddr::V6(ip) => {
            let mut rest = &mut out[ANNOUNCE_AT..ANNOUNCE_AT + ANNOUNCE_MAX_LEN];
            // The buffer is sized for the longest address, so the write cannot run out of room.
            let _ = write!(rest, "{ip}");
            ANNOUNCE_AT + ANNOUNCE_MAX_LEN - rest.len()
        }
    };
    out[end] = b':';
    end = put_port(&mut out, end + 1, a.port);
    out[end] = b'@';
    end = put_port(&mut out, end + 1, a.bus_port);
    out[end..end + 2].copy_from_slice(b"\r\n");
    // The header ends where the text starts: one digit of length starts it a byte later.
    let text_len = end - ANNOUNCE_AT;
    let start = usize::from(text_len < 10);
    out[start] = b'$';
    put_decimal(&mut out, start + 1, text_len as u64);
    out[ANNOUNCE_AT - 2..ANNOUNCE_AT].copy_from_slice(b"\r\n");
    // The whole window in one copy of a fixed size, which the compiler makes a few wide moves, then the bytes past
    // the reply cut off: cheaper than any copy of the reply's own length.
    let reply_end = dst.len() + (end + 2 - start);
    dst.extend_from_slice(&out[start..start + ANNOUNCE_WINDOW]);
    dst.truncate(reply_end);
}

/// The bytes [`encode_announce`] copies, whatever the reply's length: the header, the longest text and CRLF.
const ANNOUNCE_WINDOW: usize = ANNOUNCE_AT + ANNOUNCE_MAX_LEN + 2;

/// Longest copy [`put_short`] makes itself.
const SHORT_COPY_MAX: usize = 64;

/// Appends a reply's few bytes with word-sized stores rather than a call to `memcpy`: the static build users run
/// links musl, whose `memcpy` begins every copy with a `rep movs` that takes longer than a short reply's bytes.
fn put_short(dst: &mut BytesMut, bytes: &[u8]) {
    if bytes.len() > SHORT_COPY_MAX {
        return dst.extend_from_slice(bytes);
    }
    dst.reserve(bytes.len());
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        dst.put_u64_ne(u64::from_ne_bytes(word.try_into().expect("chunks_exact gives eight bytes")));
    }
    let mut rest = words.remainder();
    if let [a, b, c, d, tail @ ..] = rest {
        dst.put_u32_ne(u32::from_ne_bytes([*a, *b, *c, *d]));
        rest = tail;
    }
    if let [a, b, tail @ ..] = rest {
        dst.put_u16_ne(u16::from_ne_bytes([*a, *b]));
        rest = tail;
    }
    if let [a] = rest {
        dst.put_u8(*a);
    }
}

/// [`put_decimal`] for a port. The host ports Docker publishes are ephemeral, five digits on Linux: those are
/// written without a loop, from two digit pairs.
fn put_port(out: &mut [u8], at: usize, port: u16) -> usize {
    if port < 10_000 {
        return put_decimal(out, at, port.into());
    }
    let (first, rest) = (port / 10_000, usize::from(port % 10_000));
    let digits = &mut out[at..at + 5];
    digits[0] = b'0' + first as u8;
    digits[1..3].copy_from_slice(&DIGIT_PAIRS[rest / 100]);
    digits[3..5].copy_from_slice(&DIGIT_PAIRS[rest % 100]);
    at + 5
}

/// Writes `n` in decimal into `out` from `at`; returns where the digits end. Two digits at a time, from a table:
/// a reply's numbers (octets, ports, lengths) are short, and this is most of encoding one.
fn put_decimal(out: &mut [u8], at: usize, n: u64) -> usize {
    let len = match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        10000..=99999 => 5,
        _ => n.ilog10() as usize + 1,
    };
    let end = at + len;
    let mut place = end;
    let mut rest = n;
    while rest >= 100 {
        place -= 2;
        out[place..place + 2].copy_from_slice(&DIGIT_PAIRS[(rest % 100) as usize]);
        rest /= 100;
    }
    if rest >= 10 {
        out[at..at + 2].copy_from_slice(&DIGIT_PAIRS[rest as usize]);
    } else {
        out[at] = b'0' + rest as u8;
    }
    end
}

/// Every octet in decimal followed by a dot, padded to four bytes, then how many of them it is.
const OCTETS: [[u8; 5]; 256] = {
    let mut octets = [[0u8; 5]; 256];
    let mut i = 0;
    while i < 256 {
        let (hundreds, tens, ones) = (b'0' + (i / 100) as u8, b'0' + (i / 10 % 10) as u8, b'0' + (i % 10) as u8);
        octets[i] = match i {
            0..=9 => [ones, b'.', 0, 0, 2],
            10..=99 => [tens, ones, b'.', 0, 3],
            _ => [hundreds, tens, ones, b'.', 4],
        };
        i += 1;
    }
    octets
};

/// "00" to "99".
const DIGIT_PAIRS: [[u8; 2]; 100] = {
    let mut pairs = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        pairs[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    pairs
};

fn one_line(s: &str) -> Cow<'_, str> {
    if s.contains(['\r', '\n']) {
        Cow::Owned(s.replace(['\r', '\n'], " "))
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: &Reply, p: Protocol) -> String {
        let mut b = BytesMut::new();
        r.encode(p, &mut b);
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn announces_encode_byte_for_byte_like_display() {
        let cases = [
            ("0.0.0.0", 0, 9),
            ("192.0.2.5", 34176, 34175),
            ("10.20.99.100", 6379, 16379),
            ("255.255.255.255", 65535, 10),
            ("172.17.0.1", 9999, 10000),
            ("172.17.0.1", 32768, 60999),
            ("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", 65535, 65535),
            ("::", 0, 0),
        ];
        for (ip, port, bus_port) in cases {
            let a = Announce { ip: ip.parse().unwrap(), port, bus_port };
            let text = a.to_string();
            assert_eq!(enc(&Reply::Announce(a), Protocol::Resp2), format!("${}\r\n{text}\r\n", text.len()));
            // Appended after what the buffer holds, which stays as it was, with nothing after the reply.
            let mut out = BytesMut::from(&b"+PONG\r\n"[..]);
            Reply::Announce(a).encode(Protocol::Resp2, &mut out);
            assert_eq!(out, format!("+PONG\r\n${}\r\n{text}\r\n", text.len()).as_bytes());
        }
    }

    #[test]
    fn an_announce_encodes_as_its_bulk_string() {
        let a = Announce { ip: "192.0.2.5".parse().unwrap(), port: 30001, bus_port: 40001 };
        for p in [Protocol::Resp2, Protocol::Resp3] {
            assert_eq!(enc(&Reply::Announce(a), p), "$21\r\n192.0.2.5:30001@40001\r\n");
            let mut via_frames = BytesMut::new();
            match p {
                Protocol::Resp2 => {
                    redis_protocol::resp2::encode::extend_encode(&mut via_frames, &Reply::Announce(a).to_resp2(), false)
                }
                Protocol::Resp3 => redis_protocol::resp3::encode::complete::extend_encode(
                    &mut via_frames,
                    &Reply::Announce(a).to_resp3(),
                    false,
                ),
            }
            .unwrap();
            assert_eq!(&via_frames[..], enc(&Reply::Announce(a), p).as_bytes());
        }
    }

    #[test]
    fn short_and_long_strings_encode_as_the_reference_encoder_does() {
        // Every length the word-by-word copy handles, and past it.
        for len in 0..=SHORT_COPY_MAX + 9 {
            let text: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            for reply in [Reply::text(text.clone()), Reply::Simple(text.clone().into())] {
                let mut ours = BytesMut::from(&b"before"[..]);
                reply.encode(Protocol::Resp2, &mut ours);
                let mut theirs = BytesMut::from(&b"before"[..]);
                redis_protocol::resp2::encode::extend_encode(&mut theirs, &reply.to_resp2(), false).unwrap();
                assert_eq!(ours, theirs, "{reply:?}");
            }
        }
    }

    #[test]
    fn decimals_read_as_rust_prints_them() {
        for n in [0, 7, 9, 10, 42, 99, 100, 255, 999, 1000, 6379, 9999, 10000, 65535, 99999, 100000, u64::MAX] {
            let mut out = [b'x'; 24];
            let end = put_decimal(&mut out, 2, n);
            assert_eq!(&out[2..end], n.to_string().as_bytes());
            assert_eq!(out[..2], *b"xx");
            assert_eq!(out[end..], vec![b'x'; 24 - end][..]);
        }
    }

    #[test]
    fn every_port_reads_as_rust_prints_it() {
        for port in 0..=u16::MAX {
            let mut out = [b'x'; 8];
            let end = put_port(&mut out, 1, port);
            assert_eq!(&out[1..end], port.to_string().as_bytes());
            assert_eq!((out[0], &out[end..]), (b'x', &vec![b'x'; 8 - end][..]));
        }
    }

    #[test]
    fn scalars_in_both_protocols() {
        for p in [Protocol::Resp2, Protocol::Resp3] {
            assert_eq!(enc(&Reply::ok(), p), "+OK\r\n");
            assert_eq!(enc(&Reply::text("1.2.3.4:1@2"), p), "$11\r\n1.2.3.4:1@2\r\n");
            assert_eq!(enc(&Reply::text(""), p), "$0\r\n\r\n");
            assert_eq!(enc(&Reply::error("ERR a\r\nb"), p), "-ERR a  b\r\n");
        }
        assert_eq!(enc(&Reply::Integer(-3), Protocol::Resp2), ":-3\r\n");
        assert_eq!(enc(&Reply::Integer(-3), Protocol::Resp3), ":-3\r\n");
        assert_eq!(enc(&Reply::Null, Protocol::Resp2), "$-1\r\n");
        assert_eq!(enc(&Reply::Null, Protocol::Resp3), "_\r\n");
    }

    #[test]
    fn aggregates_flatten_in_resp2() {
        let map = Reply::Map(vec![(Reply::text("proto"), Reply::Integer(3))]);
        assert_eq!(enc(&map, Protocol::Resp2), "*2\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(enc(&map, Protocol::Resp3), "%1\r\n$5\r\nproto\r\n:3\r\n");
        let set = Reply::Set(vec![Reply::Simple("write".into())]);
        assert_eq!(enc(&set, Protocol::Resp2), "*1\r\n+write\r\n");
        assert_eq!(enc(&set, Protocol::Resp3), "~1\r\n+write\r\n");
        assert_eq!(enc(&Reply::Verbatim("a".into()), Protocol::Resp3), "=5\r\ntxt:a\r\n");
        assert_eq!(enc(&Reply::Verbatim("a".into()), Protocol::Resp2), "$1\r\na\r\n");
        let pairs = Reply::Pairs(vec![(Reply::text("a"), Reply::text("b")), (Reply::text("c"), Reply::text("d"))]);
        assert_eq!(enc(&pairs, Protocol::Resp2), "*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n");
        assert_eq!(enc(&pairs, Protocol::Resp3), "*2\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n*2\r\n$1\r\nc\r\n$1\r\nd\r\n");
    }

    #[test]
    fn fast_bulk_path_matches_the_encoder() {
        let r = Reply::Bulk(Bytes::from(vec![b'x'; 1234]));
        let mut fast = BytesMut::new();
        r.encode(Protocol::Resp2, &mut fast);
        let mut slow = BytesMut::new();
        redis_protocol::resp2::encode::extend_encode(&mut slow, &r.to_resp2(), false).unwrap();
        assert_eq!(fast, slow);
    }
}
