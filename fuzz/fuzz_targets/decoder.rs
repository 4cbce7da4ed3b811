//! Any bytes, however they are cut into reads, decode to the same requests and the same error as the whole
//! input at once; the decoder only takes bytes from the front of its buffer and stays within its limits.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rediscover::protocol::{DecodeLimits, RequestDecoder};

/// Small enough that short inputs reach every limit.
const SMALL: DecodeLimits = DecodeLimits { max_bulk_len: 16, max_args: 4, max_inline_len: 24, max_request_len: 96 };

/// What one way of feeding the input produced.
#[derive(Debug, PartialEq)]
struct Outcome {
    requests: Vec<Vec<Vec<u8>>>,
    error: Option<String>,
    /// Bytes left in the buffer and whether the decoder is inside a request, when it did not fail.
    left: Option<(usize, bool)>,
}

fuzz_target!(|input: &[u8]| {
    for limits in [SMALL, DecodeLimits::default()] {
        let whole = decode(input, limits, || usize::MAX);
        assert_eq!(decode(input, limits, || 1), whole, "byte by byte, {limits:?}");
        let mut state = seed(input);
        let random = decode(input, limits, || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1 + (state % 97) as usize
        });
        assert_eq!(random, whole, "random chunks, {limits:?}");
    }
});

/// Feeds `input` in chunks of the sizes `chunk` gives, decoding after each, checking the buffer as it goes.
fn decode(input: &[u8], limits: DecodeLimits, mut chunk: impl FnMut() -> usize) -> Outcome {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::new();
    let (mut fed, mut taken) = (0, 0);
    let mut requests = Vec::new();
    while fed < input.len() {
        let end = fed.saturating_add(chunk()).min(input.len());
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        loop {
            let (len_before, capacity_before) = (buf.len(), buf.capacity());
            let result = decoder.decode(&mut buf);
            assert!(buf.len() <= len_before, "the decoder added bytes to its buffer");
            taken += len_before - buf.len();
            assert_eq!(&buf[..], &input[taken..fed], "the decoder changed bytes it did not take");
            // It may make room for one declared bulk string, never more: the buffer holds at most what was
            // given and one bulk string, twice over for the allocator's doubling (and at least the 1 KiB below
            // which `bytes` does not remember a buffer's original size).
            let bound = 2 * (fed + limits.max_bulk_len + 2).max(1024);
            assert!(buf.capacity() <= capacity_before.max(bound), "buffer grew to {}", buf.capacity());
            match result {
                Ok(Some(args)) => {
                    assert!(!args.is_empty(), "an empty request was returned");
                    assert!(args.len() <= limits.max_args, "{} arguments", args.len());
                    let longest = limits.max_bulk_len.max(limits.max_inline_len);
                    assert!(args.iter().all(|a| a.len() <= longest), "an argument over the limits");
                    requests.push(args.iter().map(|a| a.to_vec()).collect());
                }
                Ok(None) => break,
                // Where the error is noticed may depend on the cuts; the error itself may not.
                Err(e) => return Outcome { requests, error: Some(e.to_string()), left: None },
            }
        }
    }
    let mid_request = decoder.is_mid_request();
    assert!(mid_request || buf.is_empty(), "bytes left over between requests");
    Outcome { requests, error: None, left: Some((buf.len(), mid_request)) }
}

/// Chunk sizes follow from the input, so each run is reproducible from its input alone.
fn seed(input: &[u8]) -> u64 {
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    hash | 1
}
