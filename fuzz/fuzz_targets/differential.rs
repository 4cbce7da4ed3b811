//! Our request decoder against redis-protocol's RESP2 decoder: on a well-formed array of bulk strings both give
//! the same arguments, and what only one of them accepts is one of the differences listed below.
//!
//! The differences, all on purpose (ours follows Redis's `processMultibulkBuffer`, theirs is a general RESP2
//! frame parser):
//! - a length with a `+`, a leading zero or `-0` is refused, as Redis's `string2ll` refuses it; they parse it
//!   with `str::parse`;
//! - the two bytes after a bulk string must be CRLF; they skip them unchecked;
//! - an element that is not a bulk string (nested array, `$-1`, simple string, integer) is refused: a request
//!   is a flat list of arguments;
//! - `*0` and `*-1` are no request at all, and are skipped, as Redis does; `*-2` and below too;
//! - a line that does not start with `*` is an inline command to us and a frame (or an error) to them;
//! - our limits; this target sets them to the input's size, so that they never decide.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use redis_protocol::resp2::decode::decode as decode_theirs;
use redis_protocol::resp2::types::OwnedFrame;
use rediscover::protocol::{DecodeLimits, RequestDecoder};

fuzz_target!(|input: &[u8]| {
    compare(input);
    // Random bytes are rarely a well-formed array: build one from the same bytes so that agreement is exercised.
    if let Ok(args) = Unstructured::new(input).arbitrary::<Vec<Vec<u8>>>() {
        let request = encode(&args);
        let (theirs, used) = decode_theirs(&request).expect("they accept a well-formed array").expect("complete");
        assert_eq!(used, request.len());
        assert_eq!(bulk_strings(&theirs).as_ref(), Some(&args));
        let expected = if args.is_empty() { None } else { Some(args) };
        assert_eq!(decode_first(&request), (Ok(expected), request.len()));
    }
});

fn compare(input: &[u8]) {
    match decode_theirs(input) {
        Ok(Some((frame @ OwnedFrame::Array(_), used))) => {
            let (ours, taken) = decode_first(&input[..used]);
            match bulk_strings(&frame) {
                // Written the one way Redis writes it: we read exactly the same arguments.
                Some(args) if encode(&args) == input[..used] => {
                    let expected = if args.is_empty() { None } else { Some(args) };
                    assert_eq!((ours, taken), (Ok(expected), used));
                }
                // A length written another way, no CRLF after a bulk string, or an element that is not one.
                _ => assert!(ours.is_err(), "we accepted {:?} as {ours:?}", String::from_utf8_lossy(&input[..used])),
            }
        }
        Ok(Some((OwnedFrame::Null, used))) if input.starts_with(b"*") => {
            let (ours, taken) = decode_first(&input[..used]);
            if input[..used] == *b"*-1\r\n" {
                assert_eq!((ours.expect("we refused `*-1`"), taken), (None, used));
            } else {
                // `*-01`, `*-1` written another way.
                assert!(ours.is_err(), "we accepted {:?}", String::from_utf8_lossy(&input[..used]));
            }
        }
        _ => {}
    }
    // The other way round: every request we read from the start of an array, they read the same.
    let skipped = input.starts_with(b"*0\r") || input.starts_with(b"*-");
    if input.starts_with(b"*") && !skipped {
        if let (Ok(Some(args)), taken) = decode_first(input) {
            let theirs = decode_theirs(&input[..taken]);
            let Ok(Some((frame, used))) = theirs else { panic!("they refused what we read as {args:?}: {theirs:?}") };
            assert_eq!((bulk_strings(&frame), used), (Some(args), taken));
        }
    }
}

/// Our first request from `input`, and how many bytes it took; limits as large as the input.
fn decode_first(input: &[u8]) -> (Result<Option<Vec<Vec<u8>>>, String>, usize) {
    let n = input.len();
    let limits = DecodeLimits { max_bulk_len: n, max_args: n, max_inline_len: n, max_request_len: n };
    let mut buf = BytesMut::from(input);
    let result = RequestDecoder::new(limits).decode(&mut buf);
    let taken = n - buf.len();
    (result.map(|r| r.map(|args| args.iter().map(|a| a.to_vec()).collect())).map_err(|e| e.to_string()), taken)
}

/// The arguments of an array of bulk strings.
fn bulk_strings(frame: &OwnedFrame) -> Option<Vec<Vec<u8>>> {
    let OwnedFrame::Array(items) = frame else { return None };
    items.iter().map(|f| if let OwnedFrame::BulkString(b) = f { Some(b.clone()) } else { None }).collect()
}

/// A request as clients write it.
fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}
