//! Incremental, bounded decoder for client requests: RESP arrays of bulk strings and inline lines.
//!
//! A request is what Redis's `processMultibulkBuffer` and `processInlineBuffer` accept. The decoder keeps its
//! place between reads, so every byte is looked at once however the request is split, and it never recurses:
//! a nested array is simply an argument that does not start with `$`.

use bytes::{Buf, Bytes, BytesMut};

/// Limits on what one request may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Longest bulk string (Redis: proto-max-bulk-len, 512 MB there; ids and names are short here).
    pub max_bulk_len: usize,
    /// Most arguments in one request (Redis: 1024*1024 multibulk items).
    pub max_args: usize,
    /// Longest inline line, and longest `*`/`$` count line (Redis: PROTO_INLINE_MAX_SIZE, 64 KiB).
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

/// Most arguments in a request from a client that must authenticate and has not yet (Redis: a fixed 10 in
/// processMultibulkBuffer); not a flag, as it is not a setting in Redis either.
pub const UNAUTHENTICATED_MAX_ARGS: i64 = 10;
/// Longest bulk string from a client that must authenticate and has not yet (Redis: a fixed 16384).
pub const UNAUTHENTICATED_MAX_BULK_LEN: i64 = 16384;

/// Malformed input: the connection answers `-ERR Protocol error: <this>` and closes, as Redis does.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The `*` count is not a number or exceeds `max_args`.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// The `$` length is not a number, negative, or exceeds `max_bulk_len`.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// More than `UNAUTHENTICATED_MAX_ARGS` arguments before AUTH.
    #[error("unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// A bulk string longer than `UNAUTHENTICATED_MAX_BULK_LEN` before AUTH.
    #[error("unauthenticated bulk length")]
    UnauthenticatedBulkLength,
    /// An array element is not a bulk string (nested arrays included).
    #[error("expected '$', got '{}'", printable(*.0))]
    ExpectedBulk(u8),
    /// A bulk string is not followed by CRLF (Redis skips those two bytes unchecked; we refuse them).
    #[error("expected CRLF after bulk string")]
    MissingCrlf,
    /// An inline line with an unterminated quote, or a closing quote followed by something else than a space.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// An inline line longer than `max_inline_len`.
    #[error("too big inline request")]
    TooBigInline,
    /// An inline line with more than `max_args` arguments.
    #[error("too many arguments in inline request")]
    TooManyInlineArgs,
    /// A `*` line longer than `max_inline_len`.
    #[error("too big mbulk count string")]
    TooBigMultibulkCount,
    /// A `$` line longer than `max_inline_len`.
    #[error("too big bulk count string")]
    TooBigBulkCount,
    /// The request would take more than `max_request_len` bytes.
    #[error("request too large")]
    RequestTooLarge,
}

/// Redis prints the offending byte as is; a control or non-ASCII byte is shown escaped so the reply stays one line.
fn printable(byte: u8) -> String {
    if byte.is_ascii_graphic() || byte == b' ' {
        char::from(byte).to_string()
    } else {
        format!("\\x{byte:02x}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests.
    Idle,
    /// Inside an array, before the `$` line of the next argument.
    Header { remaining: usize },
    /// Inside an array, waiting for `len` bytes plus CRLF.
    Body { len: usize, remaining: usize },
}

/// Where an argument lies in the read buffer: its first byte and the byte after its last.
type Span = (usize, usize);

/// Decodes client requests into their arguments; see the module documentation.
#[derive(Debug)]
pub struct RequestDecoder {
    limits: DecodeLimits,
    state: State,
    /// Where the arguments of the request being read lie in the buffer.
    spans: Vec<Span>,
    /// Bytes of the buffer that the request being read has taken so far: it stays in the buffer until it is
    /// whole, so that its arguments are lent as slices of it.
    taken: usize,
    /// Bytes of the buffer after `taken` already searched for `\n` without finding one.
    scanned: usize,
    /// Bytes at the front of the buffer of the request lent last, let go at the next call.
    lent: usize,
    /// Whether the smaller limits of a client that has yet to authenticate apply.
    unauthenticated: bool,
}

/// A request's arguments, lent by the decoder until its next call: slices of the read buffer, with no copy and no
/// reference count (an inline line's quotes are undone in the buffer itself).
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    bytes: &'a [u8],
    spans: &'a [Span],
}

/// Most arguments [`Args::with_slice`] lays out on the stack.
const ON_STACK: usize = 8;

impl<'a> Args<'a> {
    /// How many arguments there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none (never so for a request the decoder lends).
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The arguments in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let bytes = self.bytes;
        self.spans.iter().map(move |&(start, end)| &bytes[start..end])
    }

    /// Gives `f` the arguments as a slice, laid out on the stack when there are at most eight, as in what clients
    /// send.
    pub fn with_slice<R>(&self, f: impl FnOnce(&[&'a [u8]]) -> R) -> R {
        if self.len() <= ON_STACK {
            let mut words: [&[u8]; ON_STACK] = [&[]; ON_STACK];
            for (word, arg) in words.iter_mut().zip(self.iter()) {
                *word = arg;
            }
            f(&words[..self.len()])
        } else {
            f(&self.iter().collect::<Vec<_>>())
        }
    }
}

impl Default for RequestDecoder {
    fn default() -> Self {
        RequestDecoder::new(DecodeLimits::default())
    }
}

impl RequestDecoder {
    /// A decoder with these limits.
    pub fn new(limits: DecodeLimits) -> Self {
        RequestDecoder {
            limits,
            state: State::Idle,
            spans: Vec::new(),
            taken: 0,
            scanned: 0,
            lent: 0,
            unauthenticated: false,
        }
    }

    /// Applies Redis's smaller limits for a client that must authenticate and has not (yet, or again after
    /// RESET), from the next request header on.
    pub fn set_unauthenticated(&mut self, unauthenticated: bool) {
        self.unauthenticated = unauthenticated;
    }

    /// True while part of a request has been read but not all of it.
    pub fn is_mid_request(&self) -> bool {
        self.state != State::Idle || self.scanned > 0
    }

    /// Finds the end of the next line (the index of its `\n`, counted from the line's start) at `self.taken`, or
    /// `None` until it is complete; counts it as part of the request.
    fn line_end(
        &mut self,
        src: &[u8],
        max_len: usize,
        too_long: ProtocolError,
    ) -> Result<Option<usize>, ProtocolError> {
        let line = &src[self.taken..];
        let Some(found) = line[self.scanned..].iter().position(|&b| b == b'\n') else {
            if line.len() > max_len {
                return Err(too_long);
            }
            self.scanned = line.len();
            return Ok(None);
        };
        let end = self.scanned + found;
        if end > max_len {
            return Err(too_long);
        }
        self.scanned = 0;
        self.taken += end + 1;
        if self.taken > self.limits.max_request_len {
            return Err(ProtocolError::RequestTooLarge);
        }
        Ok(Some(end))
    }

    /// Reads the `*` or `$` line at `self.taken` and counts it as part of the request: its count (`None` if it is
    /// not a number), or `None` until the line is complete.
    fn count_line(
        &mut self,
        src: &[u8],
        max_len: usize,
        too_long: ProtocolError,
    ) -> Result<Option<Option<i64>>, ProtocolError> {
        let start = self.taken;
        // What clients send: a few digits, no sign, no leading zero, then CRLF; read in one pass. Anything else
        // takes the general path, which has the exact error for each case.
        if let Some((count, next)) = plain_count(src, start, src[start], max_len) {
            self.scanned = 0;
            self.taken = next;
            if self.taken > self.limits.max_request_len {
                return Err(ProtocolError::RequestTooLarge);
            }
            // At most nine digits: the count fits an i64.
            return Ok(Some(Some(count as i64)));
        }
        let Some(end) = self.line_end(src, max_len, too_long)? else {
            return Ok(None);
        };
        Ok(Some(parse_count(&src[start + 1..start + end])))
    }
}

/// How many arguments' room the decoder keeps from one request to the next.
const KEPT_ARGS: usize = 16;

impl RequestDecoder {
    /// Takes the next whole request from the front of `src`: its arguments, or `None` until more bytes come. A
    /// request is taken from the buffer once it is whole; an error means the connection must close.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let args = self.decode_borrowed(src)?.map(|args| args.iter().map(Bytes::copy_from_slice).collect());
        src.advance(std::mem::take(&mut self.lent));
        Ok(args)
    }

    /// [`RequestDecoder::decode`], lending the arguments instead: they are slices of `src`, which keeps the
    /// request until the next call, so a request costs no allocation and no copy. The call that finds no complete
    /// request takes the last one from the buffer.
    pub fn decode_borrowed<'a>(&'a mut self, src: &'a mut BytesMut) -> Result<Option<Args<'a>>, ProtocolError> {
        src.advance(std::mem::take(&mut self.lent));
        if !self.next_request(src)? {
            return Ok(None);
        }
        Ok(Some(Args { bytes: &src[..self.lent], spans: &self.spans }))
    }

    /// Reads the next whole request, its arguments into `self.spans`; true when there is one, whose bytes
    /// `self.lent` then says.
    fn next_request(&mut self, src: &mut BytesMut) -> Result<bool, ProtocolError> {
        if self.state == State::Idle {
            self.spans.clear();
            // The room of a request with many arguments is not kept for a connection that may now idle.
            if self.spans.capacity() > KEPT_ARGS {
                self.spans = Vec::new();
            }
        }
        loop {
            match self.state {
                State::Idle => {
                    let Some(&first) = src.first() else { return Ok(false) };
                    if first == b'*' {
                        if self.take_whole_request(src) {
                            return Ok(true);
                        }
                        let limit = self.limits.max_inline_len;
                        let Some(count) = self.count_line(src, limit, ProtocolError::TooBigMultibulkCount)? else {
                            return Ok(false);
                        };
                        match count {
                            Some(n) if n > self.limits.max_args as i64 => {
                                return Err(ProtocolError::InvalidMultibulkLength)
                            }
                            Some(n) if self.unauthenticated && n > UNAUTHENTICATED_MAX_ARGS => {
                                return Err(ProtocolError::UnauthenticatedMultibulkLength)
                            }
                            // Redis ignores `*0` and `*-1` as empty requests.
                            Some(n) if n <= 0 => src.advance(std::mem::take(&mut self.taken)),
                            Some(n) => {
                                let n = n as usize;
                                self.spans.reserve(n.min(8));
                                self.state = State::Header { remaining: n };
                            }
                            None => return Err(ProtocolError::InvalidMultibulkLength),
                        }
                    } else {
                        let limit = self.limits.max_inline_len.min(self.limits.max_request_len);
                        let Some(end) = self.line_end(src, limit, ProtocolError::TooBigInline)? else {
                            return Ok(false);
                        };
                        self.taken = 0;
                        // A malformed line is taken with its error: the undoing of its quotes may have begun.
                        if let Err(e) = split_inline(&mut src[..end + 1], self.limits.max_args, &mut self.spans) {
                            src.advance(end + 1);
                            return Err(e);
                        }
                        // Redis ignores blank lines.
                        if !self.spans.is_empty() {
                            self.lent = end + 1;
                            return Ok(true);
                        }
                        src.advance(end + 1);
                    }
                }
                State::Header { remaining: 0 } => {
                    self.state = State::Idle;
                    self.lent = std::mem::take(&mut self.taken);
                    return Ok(true);
                }
                State::Header { remaining } => {
                    let Some(&first) = src.get(self.taken) else { return Ok(false) };
                    // Redis waits for the whole line before this check; failing at the first byte is the same answer.
                    if first != b'$' {
                        return Err(ProtocolError::ExpectedBulk(first));
                    }
                    let limit = self.limits.max_inline_len;
                    let Some(count) = self.count_line(src, limit, ProtocolError::TooBigBulkCount)? else {
                        return Ok(false);
                    };
                    let len = match count {
                        Some(n) if self.unauthenticated && n > UNAUTHENTICATED_MAX_BULK_LEN => {
                            // Redis answers an out-of-range length as invalid before it looks at authentication.
                            return Err(if n > self.limits.max_bulk_len as i64 {
                                ProtocolError::InvalidBulkLength
                            } else {
                                ProtocolError::UnauthenticatedBulkLength
                            });
                        }
                        Some(n) if (0..=self.limits.max_bulk_len as i64).contains(&n) => n as usize,
                        _ => return Err(ProtocolError::InvalidBulkLength),
                    };
                    if self.taken + len + 2 > self.limits.max_request_len {
                        return Err(ProtocolError::RequestTooLarge);
                    }
                    self.state = State::Body { len, remaining };
                }
                State::Body { len, remaining } => {
                    let (start, end) = (self.taken, self.taken + len);
                    if src.len() < end + 2 {
                        // The length is declared and bounded: make room once rather than grow step by step.
                        src.reserve(end + 2 - src.len());
                        return Ok(false);
                    }
                    if &src[end..end + 2] != b"\r\n" {
                        return Err(ProtocolError::MissingCrlf);
                    }
                    self.spans.push((start, end));
                    self.taken = end + 2;
                    self.state = State::Header { remaining: remaining - 1 };
                }
            }
        }
    }
}

/// Most arguments a request may have to be taken in one pass by [`RequestDecoder::take_whole_request`].
const WHOLE_MAX_ARGS: usize = 8;

/// Most digits of a count read by [`plain_count`]: any nine-digit number fits every limit's type and an i64.
const PLAIN_COUNT_DIGITS: usize = 9;

impl RequestDecoder {
    /// Takes a request that has arrived whole and has the form clients send (a few arguments, plain counts, no
    /// limit near), in one pass over its bytes. Anything else, and a client yet to authenticate, is left to the
    /// step-by-step path, which gives the same arguments and has the exact error for each case; so this only
    /// ever says yes or "not here", and looks at a few header lines at most before saying so.
    fn take_whole_request(&mut self, src: &[u8]) -> bool {
        if self.unauthenticated {
            return false;
        }
        // Between requests the spans are empty: what the reading pushed is taken back if it says no.
        let Some(at) = whole_request(src, &self.limits, &mut self.spans) else {
            self.spans.clear();
            return false;
        };
        // What an earlier call searched of this request's first line is taken with it.
        self.scanned = 0;
        self.taken = 0;
        self.lent = at;
        true
    }
}

/// Reads the whole request at the front of `src` for [`RequestDecoder::take_whole_request`], its arguments'
/// places pushed on `spans`: where the request ends, or `None` if it is not one of the form that path takes.
fn whole_request(src: &[u8], limits: &DecodeLimits, spans: &mut Vec<Span>) -> Option<usize> {
    let (count, mut at) = plain_count(src, 0, b'*', limits.max_inline_len)?;
    if count == 0 || count > WHOLE_MAX_ARGS || count > limits.max_args {
        return None;
    }
    for _ in 0..count {
        let (len, start) = plain_count(src, at, b'$', limits.max_inline_len)?;
        let end = start + len;
        if len > limits.max_bulk_len || src.get(end..end + 2) != Some(b"\r\n") {
            return None;
        }
        spans.push((start, end));
        at = end + 2;
    }
    (at <= limits.max_request_len).then_some(at)
}

/// Reads the line at `at` if it is `marker`, one to [`PLAIN_COUNT_DIGITS`] digits without a leading zero (or a
/// single zero), and CRLF, no longer than `max_line` up to its `\n`: its count, and where the next line starts.
fn plain_count(src: &[u8], at: usize, marker: u8, max_line: usize) -> Option<(usize, usize)> {
    // One digit, as most counts are (`*1`, `$4`): read without a loop.
    if let Some(&[m, digit @ b'0'..=b'9', b'\r', b'\n']) = src.get(at..at + 4) {
        if m == marker && max_line >= 3 {
            return Some((usize::from(digit - b'0'), at + 4));
        }
    }
    plain_count_any(src, at, marker, max_line)
}

/// [`plain_count`] for any number of digits.
fn plain_count_any(src: &[u8], at: usize, marker: u8, max_line: usize) -> Option<(usize, usize)> {
    let line = src.get(at..)?;
    if line.first() != Some(&marker) {
        return None;
    }
    let mut count = 0usize;
    let mut end = 1;
    while let Some(&digit @ b'0'..=b'9') = line.get(end) {
        if end > PLAIN_COUNT_DIGITS || (end == 2 && line[1] == b'0') {
            return None;
        }
        count = count * 10 + usize::from(digit - b'0');
        end += 1;
    }
    if end == 1 || line.get(end..end + 2) != Some(b"\r\n") || end + 1 > max_line {
        return None;
    }
    Some((count, at + end + 2))
}

/// Parses a `*`/`$` count followed by `\r`.
fn parse_count(line: &[u8]) -> Option<i64> {
    string2ll(line.strip_suffix(b"\r")?)
}

/// Reads a signed 64-bit integer by the rules of Redis's `string2ll`, which reads both request lengths and
/// integer arguments: an optional `-`, no `+`, no spaces, no leading zero, no `-0`, nothing out of range.
pub fn string2ll(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    match digits {
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', rest @ ..] if rest.iter().all(u8::is_ascii_digit) => {}
        _ => return None,
    }
    // Accumulated unsigned, so that i64::MIN, whose magnitude no i64 holds, is read too.
    let magnitude = digits.iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Splits an inline line (up to and with its `\n`) into arguments with the quoting rules of Redis's
/// `sdssplitargs`, their places appended to `spans`. A plain word is where it is; a word with quotes is written
/// over itself with the quotes undone, which never makes it longer.
fn split_inline(whole: &mut [u8], max_args: usize, spans: &mut Vec<Span>) -> Result<(), ProtocolError> {
    let mut len = whole.len();
    for suffix in [b'\n', b'\r'] {
        if len > 0 && whole[len - 1] == suffix {
            len -= 1;
        }
    }
    // sdssplitargs reads a C string: a NUL ends the line.
    if let Some(nul) = whole[..len].iter().position(|&b| b == 0) {
        len = nul;
    }
    let line = &mut whole[..len];
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Ok(());
        }
        if spans.len() == max_args {
            return Err(ProtocolError::TooManyInlineArgs);
        }
        let (end, next) = match plain_word_end(line, i) {
            Some(end) => (end, end),
            None => split_one(line, i)?,
        };
        spans.push((i, end));
        i = next;
    }
}

/// Where the unquoted word at `start` ends, if it has no quote in it (which would begin quoting, see [`split_one`]).
fn plain_word_end(line: &[u8], start: usize) -> Option<usize> {
    for (i, &byte) in line.iter().enumerate().skip(start) {
        match byte {
            b' ' | b'\n' | b'\r' | b'\t' => return Some(i),
            b'"' | b'\'' => return None,
            _ => {}
        }
    }
    Some(line.len())
}

/// `isspace` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Reads one argument starting at `start` and writes it, its quotes undone, over the line from `start`: returns
/// where what it wrote ends and the position after the argument. Every byte written consumes at least one, so
/// the writing never overtakes the reading.
fn split_one(line: &mut [u8], start: usize) -> Result<(usize, usize), ProtocolError> {
    let (mut i, mut w) = (start, start);
    let put = |line: &mut [u8], w: &mut usize, byte: u8| {
        line[*w] = byte;
        *w += 1;
    };
    // Unquoted, up to a space; a quote inside a word begins quoting too (`a"b c"` is `ab c`), up to its closing
    // quote, which ends the argument.
    let quote = loop {
        match line.get(i) {
            None | Some(b' ' | b'\n' | b'\r' | b'\t') => return Ok((w, i)),
            Some(&quote @ (b'"' | b'\'')) => break quote,
            Some(&byte) => {
                put(line, &mut w, byte);
                i += 1;
            }
        }
    };
    i += 1;
    loop {
        match (quote, line.get(i..)) {
            (b'"', Some([b'\\', b'x', hi, lo, ..])) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                let byte = hex(*hi) << 4 | hex(*lo);
                put(line, &mut w, byte);
                i += 4;
            }
            (b'"', Some([b'\\', escaped, ..])) => {
                let byte = match escaped {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => *other,
                };
                put(line, &mut w, byte);
                i += 2;
            }
            (b'\'', Some([b'\\', b'\'', ..])) => {
                put(line, &mut w, b'\'');
                i += 2;
            }
            (_, Some([byte, ..])) if *byte == quote => return closing_quote(line, i + 1).map(|next| (w, next)),
            (_, Some([byte, ..])) => {
                let byte = *byte;
                put(line, &mut w, byte);
                i += 1;
            }
            _ => return Err(ProtocolError::UnbalancedQuotes),
        }
    }
}

/// After a closing quote Redis requires a space or the end of the line.
fn closing_quote(line: &[u8], next: usize) -> Result<usize, ProtocolError> {
    match line.get(next) {
        Some(&b) if !is_space(b) => Err(ProtocolError::UnbalancedQuotes),
        _ => Ok(next),
    }
}

fn hex(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], limits: DecodeLimits) -> (Vec<Vec<Vec<u8>>>, Option<String>) {
        let mut decoder = RequestDecoder::new(limits);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(args)) => out.push(args.iter().map(|a| a.to_vec()).collect()),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }

    /// [`decode_all`] with the input given one byte at a time: no request is ever whole in the buffer.
    fn decode_bytewise(input: &[u8], limits: DecodeLimits) -> (Vec<Vec<Vec<u8>>>, Option<String>) {
        let mut decoder = RequestDecoder::new(limits);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for byte in input {
            buf.extend_from_slice(&[*byte]);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(args)) => out.push(args.iter().map(|a| a.to_vec()).collect()),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e.to_string())),
                }
            }
        }
        (out, None)
    }

    fn decode(input: &[u8]) -> (Vec<Vec<Vec<u8>>>, Option<String>) {
        decode_all(input, DecodeLimits::default())
    }

    fn args(list: &[&[u8]]) -> Vec<Vec<u8>> {
        list.iter().map(|a| a.to_vec()).collect()
    }

    #[test]
    fn lent_arguments_are_reused_but_a_large_request_leaves_no_room_behind() {
        let mut decoder = RequestDecoder::new(DecodeLimits::default());
        let mut many = b"*1000\r\n".to_vec();
        for _ in 0..1000 {
            many.extend_from_slice(b"$1\r\nx\r\n");
        }
        many.extend_from_slice(b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n");
        let mut buf = BytesMut::from(&many[..]);
        assert_eq!(decoder.decode_borrowed(&mut buf).expect("valid").map(|args| args.len()), Some(1000));
        let next = decoder.decode_borrowed(&mut buf).expect("valid").expect("a request");
        assert_eq!(next.iter().collect::<Vec<_>>(), [&b"ECHO"[..], b"hi"]);
        assert!(decoder.decode_borrowed(&mut buf).expect("valid").is_none());
        assert!(decoder.spans.is_empty() && decoder.spans.capacity() <= KEPT_ARGS, "{}", decoder.spans.capacity());
    }

    #[test]
    fn decodes_arrays_of_bulk_strings() {
        let (out, err) = decode(b"*2\r\n$4\r\nECHO\r\n$5\r\nhi\r\nx\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!(out, vec![args(&[b"ECHO", b"hi\r\nx"]), args(&[b"PING"])]);
        assert_eq!(err, None);
    }

    #[test]
    fn skips_empty_and_null_arrays_and_blank_lines() {
        let (out, err) = decode(b"*0\r\n*-1\r\n\r\n   \r\nPING\r\n");
        assert_eq!(out, vec![args(&[b"PING"])]);
        assert_eq!(err, None);
    }

    #[test]
    fn splits_inline_lines_like_sdssplitargs() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"PING\r\n", &[b"PING"]),
            (b"PING\n", &[b"PING"]),
            (b"  ECHO   a  \t b\r\n", &[b"ECHO", b"a", b"b"]),
            (b"ECHO \"a b\"\r\n", &[b"ECHO", b"a b"]),
            (b"ECHO 'a \"b'\r\n", &[b"ECHO", b"a \"b"]),
            (b"ECHO \"\\x41\\n\\t\\\"\\q\"\r\n", &[b"ECHO", b"A\n\t\"q"]),
            (b"ECHO 'it\\'s'\r\n", &[b"ECHO", b"it's"]),
            (b"ECHO \"\\xZZ\"\r\n", &[b"ECHO", b"xZZ"]),
            (b"ECHO \"\"\r\n", &[b"ECHO", b""]),
            (b"ECHO a\"b c\"\r\n", &[b"ECHO", b"ab c"]),
            (b"ECHO a\0b\r\n", &[b"ECHO", b"a"]),
        ];
        for (input, expected) in cases {
            let (out, err) = decode(input);
            assert_eq!(err, None, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(out, vec![args(expected)], "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn answers_malformed_input_with_redis_words() {
        let cases: &[(&[u8], &str)] = &[
            (b"*abc\r\n", "invalid multibulk length"),
            (b"*01\r\n", "invalid multibulk length"),
            (b"*+1\r\n", "invalid multibulk length"),
            (b"*1\n", "invalid multibulk length"),
            (b"*99999999999999999999999\r\n", "invalid multibulk length"),
            (b"*1025\r\n", "invalid multibulk length"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*1\r\n$65537\r\n", "invalid bulk length"),
            (b"*1\r\n$x\r\n", "invalid bulk length"),
            (b"*1\r\n*1\r\n", "expected '$', got '*'"),
            (b"*1\r\n\x01", "expected '$', got '\\x01'"),
            (b"*1\r\n$1\r\nab\r\n", "expected CRLF after bulk string"),
            (b"ECHO \"abc\r\n", "unbalanced quotes in request"),
            (b"ECHO \"a\"b\r\n", "unbalanced quotes in request"),
            (b"ECHO 'a\r\n", "unbalanced quotes in request"),
        ];
        for (input, expected) in cases {
            let (out, err) = decode(input);
            assert!(out.is_empty());
            assert_eq!(err.as_deref(), Some(*expected), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn enforces_line_and_request_limits() {
        let limits = DecodeLimits { max_bulk_len: 100, max_args: 3, max_inline_len: 16, max_request_len: 64 };
        let long = [b'a'; 17];
        assert_eq!(decode_all(&long, limits).1.as_deref(), Some("too big inline request"));
        assert_eq!(decode_all(b"*00000000000000000", limits).1.as_deref(), Some("too big mbulk count string"));
        assert_eq!(decode_all(b"*1\r\n$00000000000000000", limits).1.as_deref(), Some("too big bulk count string"));
        assert_eq!(decode_all(b"a b c d\r\n", limits).1.as_deref(), Some("too many arguments in inline request"));
        assert_eq!(decode_all(b"*2\r\n$50\r\n", limits).1, None);
        assert_eq!(decode_all(b"*2\r\n$60\r\n", limits).1.as_deref(), Some("request too large"));
    }

    #[test]
    fn an_unauthenticated_client_gets_redis_smaller_limits() {
        let mut decoder = RequestDecoder::default();
        decoder.set_unauthenticated(true);
        let ten = format!("*10\r\n{}", "$1\r\nx\r\n".repeat(10));
        let mut buf = BytesMut::from(ten.as_bytes());
        assert_eq!(decoder.decode(&mut buf).expect("ten arguments are allowed").map(|a| a.len()), Some(10));
        let big = format!("*1\r\n$16384\r\n{}\r\n", "x".repeat(16384));
        let mut buf = BytesMut::from(big.as_bytes());
        assert!(decoder.decode(&mut buf).expect("16384 bytes are allowed").is_some());
        let cases: &[(&[u8], &str)] = &[
            (b"*11\r\n", "unauthenticated multibulk length"),
            (b"*1025\r\n", "invalid multibulk length"),
            (b"*1\r\n$16385\r\n", "unauthenticated bulk length"),
            (b"*1\r\n$65537\r\n", "invalid bulk length"),
        ];
        for (input, expected) in cases {
            let mut decoder = RequestDecoder::default();
            decoder.set_unauthenticated(true);
            let err = decoder.decode(&mut BytesMut::from(*input)).expect_err("refused").to_string();
            assert_eq!(err, *expected, "{:?}", String::from_utf8_lossy(input));
        }
        let mut decoder = RequestDecoder::default();
        decoder.set_unauthenticated(true);
        decoder.set_unauthenticated(false);
        assert!(decoder.decode(&mut BytesMut::from(&b"*11\r\n"[..])).expect("signed in").is_none());
    }

    #[test]
    fn lent_arguments_are_slices_of_the_buffer_taken_at_the_next_call() {
        let mut decoder = RequestDecoder::default();
        let mut buf = BytesMut::from(&b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nECHO \"a\\x41\" b\r\n*1\r\n$4\r\nPI"[..]);
        let start = buf.as_ptr();
        let args = decoder.decode_borrowed(&mut buf).unwrap().expect("a whole request");
        assert_eq!(args.iter().collect::<Vec<_>>(), [&b"ECHO"[..], b"hi"]);
        assert_eq!(args.iter().next().map(<[u8]>::as_ptr), Some(start.wrapping_add(8)), "not a copy");
        assert_eq!(buf.len(), 48, "the request stays in the buffer while it is lent");
        // An inline request's quotes are undone in the buffer.
        let args = decoder.decode_borrowed(&mut buf).unwrap().expect("a whole request");
        assert_eq!(args.iter().collect::<Vec<_>>(), [&b"ECHO"[..], b"aA", b"b"]);
        assert!(decoder.decode_borrowed(&mut buf).unwrap().is_none());
        assert_eq!(&buf[..], b"*1\r\n$4\r\nPI", "a partial request stays in the buffer");
    }

    #[test]
    fn a_request_that_arrives_whole_meets_every_limit_at_the_same_byte() {
        let requests: &[&[u8]] = &[
            b"*2\r\n$8\r\nDISCOVER\r\n$12\r\nabcdef012345\r\n",
            b"*1\r\n$0\r\n\r\n",
            b"*9\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n$1\r\ne\r\n$1\r\nf\r\n$1\r\ng\r\n$1\r\nh\r\n$1\r\ni\r\n",
            b"*1\r\n$10\r\n0123456789\r\n*1\r\n$4\r\nPING\r\n",
        ];
        for input in requests {
            let plenty = input.len() + 1;
            for limit in 0..=plenty {
                for limits in [
                    DecodeLimits { max_bulk_len: limit, ..DecodeLimits::default() },
                    DecodeLimits { max_args: limit, ..DecodeLimits::default() },
                    DecodeLimits { max_inline_len: limit, ..DecodeLimits::default() },
                    DecodeLimits { max_request_len: limit, ..DecodeLimits::default() },
                ] {
                    let whole = decode_all(input, limits);
                    assert_eq!(
                        whole,
                        decode_bytewise(input, limits),
                        "{limits:?} {:?}",
                        String::from_utf8_lossy(input)
                    );
                }
            }
            assert_eq!(decode_all(input, DecodeLimits::default()).1, None);
        }
    }

    #[test]
    fn gives_the_same_requests_however_the_input_is_split() {
        let input: &[u8] = b"*2\r\n$4\r\nECHO\r\n$3\r\na b\r\nECHO \"x y\" 'z'\r\n*0\r\n*1\r\n$4\r\nPING\r\n";
        let whole = decode(input);
        for cut in 0..=input.len() {
            let mut decoder = RequestDecoder::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for part in [&input[..cut], &input[cut..]] {
                buf.extend_from_slice(part);
                while let Some(args) = decoder.decode(&mut buf).expect("valid input") {
                    out.push(args.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
                }
            }
            assert_eq!(out, whole.0, "cut at {cut}");
            assert!(!decoder.is_mid_request());
        }
        let mut decoder = RequestDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for byte in input {
            buf.extend_from_slice(&[*byte]);
            while let Some(args) = decoder.decode(&mut buf).expect("valid input") {
                out.push(args.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
            }
        }
        assert_eq!(out, whole.0);
    }

    #[test]
    fn reports_a_partial_request() {
        let mut decoder = RequestDecoder::default();
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPI"[..]);
        assert!(decoder.decode(&mut buf).expect("valid prefix").is_none());
        assert!(decoder.is_mid_request());
        buf.extend_from_slice(b"NG\r\n");
        assert!(decoder.decode(&mut buf).expect("valid input").is_some());
        assert!(!decoder.is_mid_request());
    }

    #[test]
    fn a_one_digit_count_reads_as_any_count_does() {
        // Every line of up to five bytes from the bytes that matter, at every small line limit.
        let alphabet = [b'*', b'$', b'0', b'1', b'9', b'\r', b'\n', b'x'];
        let (mut lines, mut all): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (vec![Vec::new()], Vec::new());
        for _ in 0..5 {
            lines = lines.iter().flat_map(|l| alphabet.iter().map(move |&b| [l.as_slice(), &[b]].concat())).collect();
            all.extend(lines.iter().cloned());
        }
        for line in &all {
            let src = [b"x".as_slice(), line].concat();
            for max_line in 0..6 {
                assert_eq!(
                    plain_count(&src, 1, b'*', max_line),
                    plain_count_any(&src, 1, b'*', max_line),
                    "{:?} within {max_line}",
                    String::from_utf8_lossy(line)
                );
            }
        }
    }

    #[test]
    fn integers_read_like_string2ll() {
        let good: &[(&[u8], i64)] = &[
            (b"0", 0),
            (b"7", 7),
            (b"-12", -12),
            (b"9223372036854775807", i64::MAX),
            (b"-9223372036854775808", i64::MIN),
        ];
        for (text, value) in good {
            assert_eq!(string2ll(text), Some(*value), "{:?}", String::from_utf8_lossy(text));
        }
        let bad: &[&[u8]] = &[
            b"",
            b"-",
            b"01",
            b"-0",
            b"-01",
            b"+1",
            b" 1",
            b"1 ",
            b"1.0",
            b"9223372036854775808",
            b"-9223372036854775809",
        ];
        for text in bad {
            assert_eq!(string2ll(text), None, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let nested = b"*1\r\n".repeat(100_000);
        assert_eq!(decode(&nested).1.as_deref(), Some("expected '$', got '*'"));
    }

    #[test]
    fn agrees_with_redis_protocol_on_well_formed_arrays() {
        let input = b"*3\r\n$8\r\nDISCOVER\r\n$12\r\n0123456789ab\r\n$0\r\n\r\n";
        let (frame, used) = redis_protocol::resp2::decode::decode(&Bytes::from_static(input))
            .expect("valid frame")
            .expect("complete frame");
        assert_eq!(used, input.len());
        let redis_protocol::resp2::types::OwnedFrame::Array(items) = frame else { panic!("not an array") };
        let theirs: Vec<Vec<u8>> = items
            .into_iter()
            .map(|f| match f {
                redis_protocol::resp2::types::OwnedFrame::BulkString(b) => b,
                other => panic!("not a bulk string: {other:?}"),
            })
            .collect();
        assert_eq!(decode(input).0, vec![theirs]);
    }
}
