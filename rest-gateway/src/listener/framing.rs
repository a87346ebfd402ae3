//! The request-framing gate: a pure HTTP/1.1 framing tracker that sits between the socket and hyper.
//!
//! hyper parses requests, but it cannot tell us what we need to shed abuse: when a request head
//! started arriving (hyper's own header timer also fires on idle keep-alive connections), how large a
//! head is before it completes (hyper answers a bare 431; Azure's HTTP.sys answers 400), or what chunk
//! size a chunked body declared (hyper accepts `FFFFFFFFFFFFFFFF` and waits for exabytes). So every byte
//! read from the socket goes through [`Framing::feed`] first, which follows the same framing rules hyper
//! does (RFC 9112: `Transfer-Encoding: chunked` wins over `Content-Length`) and:
//!
//! - holds each request head back until it is complete, so hyper only ever sees whole heads, and reports
//!   [`Event::HeadStarted`] / [`Event::HeadReleased`] for the header-read timer;
//! - replaces a head larger than the limit with [`SYNTHETIC_HEAD`] ([`Event::HeadTooLarge`]) and drops
//!   every later byte, so the service can answer that request 400 and close, in order;
//! - reports a chunk size that would take the body past the body limit the moment its digits arrive
//!   ([`Event::ChunkTooLarge`]), so the body reader fails at once instead of waiting.
//!
//! Invariant: apart from those two rejections and swallowed blank lines between requests, the bytes out
//! equal the bytes in, in order. Whenever the tracker cannot follow the stream (a head hyper will refuse,
//! a bad `Content-Length`, a chunk-size overflow) it goes [`State::Lost`] and passes everything through
//! untouched: hyper then answers or closes as it always did. The gate never invents a refusal from a
//! stream it does not understand.

/// Request ordinals count released heads from 0 in connection order; the service counts the requests
/// hyper hands it the same way, so an ordinal names the same request on both sides.
pub(crate) type Ordinal = u64;

/// What the service sees in place of a head that exceeded the limit; the service recognises it by its
/// ordinal (never by its content, which a client could send itself).
pub(crate) const SYNTHETIC_HEAD: &[u8] =
    b"GET / HTTP/1.1\r\nhost: rejected.invalid\r\nconnection: close\r\n\r\n";

/// The most headers the tracker parses; hyper refuses more than 100, so a head beyond this is refused by
/// hyper anyway (the tracker goes [`State::Lost`]).
const MAX_HEADERS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The first byte of a request head arrived.
    HeadStarted,
    /// A complete head was passed on.
    HeadReleased(Ordinal),
    /// A head exceeded the limit; [`SYNTHETIC_HEAD`] was passed on in its place.
    HeadTooLarge(Ordinal),
    /// The request's declared chunk sizes exceed the body limit.
    ChunkTooLarge(Ordinal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests or inside a head (the head buffer says which).
    Head,
    /// A `Content-Length` body: this many bytes remain.
    Fixed(u64),
    /// Hex digits of a chunk size.
    ChunkSize {
        size: u64,
        digits: u32,
    },
    /// Whitespace after the chunk size.
    ChunkLws {
        size: u64,
    },
    /// A chunk extension (ignored up to CR).
    ChunkExt {
        size: u64,
    },
    /// The LF ending a chunk-size line.
    ChunkSizeLf {
        size: u64,
    },
    /// Chunk data: this many bytes remain.
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    /// After the last chunk: at the start of a trailer line (or the final CRLF).
    TrailerStart,
    TrailerLine,
    TrailerLineLf,
    TrailerEndLf,
    /// A head was refused: every later byte is dropped.
    Discard,
    /// The stream is not understood: every later byte passes through.
    Lost,
}

/// The framing tracker of one connection.
pub(crate) struct Framing {
    state: State,
    head: Vec<u8>,
    /// Where the current header line starts in `head`.
    line_start: usize,
    max_head: usize,
    max_body: u64,
    /// Chunk sizes declared so far by the current request.
    declared: u64,
    next_ordinal: Ordinal,
}

impl Framing {
    pub(crate) fn new(max_head: usize, max_body: u64) -> Self {
        Framing {
            state: State::Head,
            head: Vec::new(),
            line_start: 0,
            max_head,
            max_body,
            declared: 0,
            next_ordinal: 0,
        }
    }

    /// Whether a head is partly received (the header-read timer runs).
    #[cfg(test)]
    pub(crate) fn in_head(&self) -> bool {
        self.state == State::Head && !self.head.is_empty()
    }

    /// Whether a refused head made the gate drop every later byte.
    pub(crate) fn discarding(&self) -> bool {
        self.state == State::Discard
    }

    /// The fast path: how many leading bytes of `input` are plain body bytes (or pass-through) that may
    /// go to hyper as they are; the tracker has accounted for them. [`Framing::feed`] takes the rest.
    pub(crate) fn pass_through(&mut self, input: &[u8]) -> usize {
        match self.state {
            State::Lost => input.len(),
            State::Fixed(remaining) => {
                let n = remaining.min(input.len() as u64);
                self.state = if n == remaining {
                    State::Head
                } else {
                    State::Fixed(remaining - n)
                };
                n as usize
            }
            State::ChunkData(remaining) => {
                let n = remaining.min(input.len() as u64);
                self.state = if n == remaining {
                    State::ChunkDataCr
                } else {
                    State::ChunkData(remaining - n)
                };
                n as usize
            }
            _ => 0,
        }
    }

    /// Consumes `input`, appending what hyper should see to `out` and what happened to `events`.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>, events: &mut Vec<Event>) {
        let mut i = 0;
        while i < input.len() {
            let rest = &input[i..];
            match self.state {
                State::Lost => {
                    out.extend_from_slice(rest);
                    return;
                }
                State::Discard => return,
                State::Fixed(_) | State::ChunkData(_) => {
                    let n = self.pass_through(rest);
                    out.extend_from_slice(&rest[..n]);
                    i += n;
                }
                State::Head => {
                    i += self.feed_head(rest, out, events);
                }
                _ => {
                    let byte = rest[0];
                    i += 1;
                    if let Some(event) = self.chunk_byte(byte) {
                        events.push(event);
                    }
                    // Framing bytes go on too, even one that lost us: it is hyper's to judge.
                    out.push(byte);
                }
            }
        }
    }

    /// Head bytes: buffers them until the blank line; returns how many bytes of `input` it took.
    fn feed_head(&mut self, input: &[u8], out: &mut Vec<u8>, events: &mut Vec<Event>) -> usize {
        for (i, &byte) in input.iter().enumerate() {
            if self.head.is_empty() {
                if byte == b'\r' || byte == b'\n' {
                    // Blank lines between requests (RFC 9112 §2.2); hyper would skip them too.
                    continue;
                }
                events.push(Event::HeadStarted);
            }
            self.head.push(byte);
            if self.head.len() > self.max_head {
                self.reject(out, events);
                return input.len();
            }
            if byte == b'\n' {
                let line = &self.head[self.line_start..self.head.len() - 1];
                let blank = line.is_empty() || line == b"\r";
                self.line_start = self.head.len();
                if blank && self.head.len() > 2 {
                    self.release(out, events);
                    return i + 1;
                }
            }
        }
        input.len()
    }

    fn reject(&mut self, out: &mut Vec<u8>, events: &mut Vec<Event>) {
        events.push(Event::HeadTooLarge(self.next_ordinal));
        self.next_ordinal += 1;
        out.extend_from_slice(SYNTHETIC_HEAD);
        self.head = Vec::new();
        self.line_start = 0;
        self.state = State::Discard;
    }

    fn release(&mut self, out: &mut Vec<u8>, events: &mut Vec<Event>) {
        events.push(Event::HeadReleased(self.next_ordinal));
        self.next_ordinal += 1;
        self.state = body_framing(&self.head);
        self.declared = 0;
        out.extend_from_slice(&self.head);
        self.head.clear();
        self.line_start = 0;
    }

    /// One byte of chunked framing outside chunk data.
    fn chunk_byte(&mut self, byte: u8) -> Option<Event> {
        let lost = State::Lost;
        self.state = match self.state {
            State::ChunkSize { size, digits } => match hex_value(byte) {
                Some(d) => {
                    let Some(size) = size.checked_mul(16).and_then(|s| s.checked_add(d)) else {
                        self.state = lost;
                        return None;
                    };
                    let total = self.declared.saturating_add(size);
                    if total > self.max_body {
                        // The rest of this body is hyper's and the service's to refuse.
                        self.state = lost;
                        return Some(Event::ChunkTooLarge(self.next_ordinal - 1));
                    }
                    State::ChunkSize {
                        size,
                        digits: digits + 1,
                    }
                }
                None if digits == 0 => lost,
                None => match byte {
                    b' ' | b'\t' => State::ChunkLws { size },
                    b';' => State::ChunkExt { size },
                    b'\r' => State::ChunkSizeLf { size },
                    _ => lost,
                },
            },
            State::ChunkLws { size } => match byte {
                b' ' | b'\t' => State::ChunkLws { size },
                b';' => State::ChunkExt { size },
                b'\r' => State::ChunkSizeLf { size },
                _ => lost,
            },
            State::ChunkExt { size } => match byte {
                b'\r' => State::ChunkSizeLf { size },
                b'\n' => lost,
                _ => State::ChunkExt { size },
            },
            State::ChunkSizeLf { size } => match byte {
                b'\n' if size == 0 => State::TrailerStart,
                b'\n' => {
                    self.declared += size;
                    State::ChunkData(size)
                }
                _ => lost,
            },
            State::ChunkDataCr => match byte {
                b'\r' => State::ChunkDataLf,
                _ => lost,
            },
            State::ChunkDataLf => match byte {
                b'\n' => State::ChunkSize { size: 0, digits: 0 },
                _ => lost,
            },
            State::TrailerStart => match byte {
                b'\r' => State::TrailerEndLf,
                b'\n' => lost,
                _ => State::TrailerLine,
            },
            State::TrailerLine => match byte {
                b'\r' => State::TrailerLineLf,
                _ => State::TrailerLine,
            },
            State::TrailerLineLf => match byte {
                b'\n' => State::TrailerStart,
                _ => lost,
            },
            State::TrailerEndLf => match byte {
                b'\n' => State::Head,
                _ => lost,
            },
            other => other,
        };
        None
    }
}

fn hex_value(byte: u8) -> Option<u64> {
    (byte as char).to_digit(16).map(u64::from)
}

/// How the body after `head` is framed, by hyper's rules; [`State::Lost`] for anything hyper refuses.
fn body_framing(head: &[u8]) -> State {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return State::Lost,
    }
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            let Ok(value) = std::str::from_utf8(header.value) else {
                return State::Lost;
            };
            // Only the last coding of the last field decides (RFC 9112 §6.3).
            let last = value.rsplit(',').next().unwrap_or("").trim();
            chunked = Some(last.eq_ignore_ascii_case("chunked"));
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match (parsed, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return State::Lost,
            }
        }
    }
    match (chunked, length) {
        (Some(true), _) if request.version == Some(1) => State::ChunkSize { size: 0, digits: 0 },
        (Some(_), _) => State::Lost,
        (None, Some(0) | None) => State::Head,
        (None, Some(n)) => State::Fixed(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split into pieces of `step` bytes, through the fast path first as the socket wrapper
    /// does; returns what hyper sees and the events.
    fn run(input: &[u8], step: usize, max_head: usize, max_body: u64) -> (Vec<u8>, Vec<Event>) {
        let mut framing = Framing::new(max_head, max_body);
        let (mut out, mut events) = (Vec::new(), Vec::new());
        for piece in input.chunks(step) {
            let pass = framing.pass_through(piece);
            out.extend_from_slice(&piece[..pass]);
            framing.feed(&piece[pass..], &mut out, &mut events);
        }
        (out, events)
    }

    /// Every split of `input` gives the same result.
    fn run_all_splits(input: &[u8], max_head: usize, max_body: u64) -> (Vec<u8>, Vec<Event>) {
        let whole = run(input, input.len().max(1), max_head, max_body);
        for step in 1..input.len() {
            assert_eq!(
                run(input, step, max_head, max_body),
                whole,
                "split every {step} bytes"
            );
        }
        whole
    }

    fn released(n: u64) -> Vec<Event> {
        (0..n)
            .flat_map(|i| [Event::HeadStarted, Event::HeadReleased(i)])
            .collect()
    }

    #[test]
    fn ordinary_requests_pass_unchanged() {
        let cases: &[(&str, u64)] = &[
            ("GET /a HTTP/1.1\r\nHost: x\r\n\r\n", 1),
            (
                "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
                2,
            ),
            // A body that looks like a head must not be taken for one.
            (
                "POST /t HTTP/1.1\r\nContent-Length: 13\r\n\r\n\r\n\r\nGET / H\r\nGET / HTTP/1.1\r\n\r\n",
                2,
            ),
            // Chunked, with an extension, a trailer and a following request.
            (
                "POST /t HTTP/1.1\r\ntransfer-encoding: gzip, Chunked\r\n\r\n5;ext=1\r\nhello\r\n\
                 A \r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nDELETE /t HTTP/1.1\r\n\r\n",
                2,
            ),
            // Bare-LF line endings, as httparse accepts.
            ("GET / HTTP/1.1\nHost: x\n\nGET / HTTP/1.1\n\n", 2),
        ];
        for (input, requests) in cases {
            let (out, events) = run_all_splits(input.as_bytes(), 1024, 1 << 20);
            assert_eq!(String::from_utf8(out).unwrap(), *input);
            assert_eq!(events, released(*requests), "{input:?}");
        }
    }

    #[test]
    fn blank_lines_between_requests_are_swallowed_and_start_no_head() {
        let input = b"\r\n\r\nGET / HTTP/1.1\r\n\r\n\r\n";
        let (out, events) = run_all_splits(input, 1024, 1 << 20);
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(events, released(1));
        let mut framing = Framing::new(1024, 1024);
        framing.feed(b"\r\n\r\n", &mut Vec::new(), &mut Vec::new());
        assert!(!framing.in_head());
        framing.feed(b"G", &mut Vec::new(), &mut Vec::new());
        assert!(framing.in_head());
    }

    #[test]
    fn oversized_head_becomes_the_synthetic_head_and_the_rest_is_dropped() {
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nx-big: {}\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            "a".repeat(300)
        );
        let (out, events) = run_all_splits(big.as_bytes(), 256, 1 << 20);
        let mut expected = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        expected.extend_from_slice(SYNTHETIC_HEAD);
        assert_eq!(out, expected);
        assert_eq!(
            events,
            [
                Event::HeadStarted,
                Event::HeadReleased(0),
                Event::HeadStarted,
                Event::HeadTooLarge(1)
            ]
        );
        // A head of exactly the limit is fine.
        let exact = "GET / HTTP/1.1\r\nx: 1\r\n\r\n";
        let (_, events) = run_all_splits(exact.as_bytes(), exact.len(), 1 << 20);
        assert_eq!(events, released(1));
    }

    #[test]
    fn chunk_sizes_beyond_the_body_limit_are_reported_as_their_digits_arrive() {
        let head = "POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            "FFFFFFFFFFFFFFFF\r\n",
            "FFFFFFFFFFFFFFFF",
            "401\r\n",
            // Two chunks that are each small but together too large.
            &format!("200\r\n{}\r\n201\r\n", "x".repeat(512)),
        ] {
            let input = format!("{head}{body}");
            let (out, events) = run_all_splits(input.as_bytes(), 1024, 1024);
            assert_eq!(String::from_utf8(out).unwrap(), input);
            assert_eq!(
                events,
                [
                    Event::HeadStarted,
                    Event::HeadReleased(0),
                    Event::ChunkTooLarge(0)
                ],
                "{body:?}"
            );
        }
        let fits = format!("{head}400\r\n{}\r\n0\r\n\r\n", "x".repeat(1024));
        let (_, events) = run_all_splits(fits.as_bytes(), 1024, 1024);
        assert_eq!(events, released(1));
    }

    #[test]
    fn streams_hyper_refuses_are_passed_through_untouched() {
        for input in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdefGET",
            "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\nGET / HTTP/1.1\r\nx: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1FFFFFFFFFFFFFFFF\r\n",
            "NOT A REQUEST\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            let (out, events) = run_all_splits(input.as_bytes(), 1024, 1 << 62);
            assert_eq!(String::from_utf8(out).unwrap(), input);
            assert_eq!(events, released(1), "{input:?}");
        }
    }

    #[test]
    fn the_fast_path_takes_only_body_bytes() {
        let mut framing = Framing::new(1024, 1 << 20);
        let (mut out, mut events) = (Vec::new(), Vec::new());
        assert_eq!(framing.pass_through(b"GET"), 0);
        framing.feed(
            b"POST / HTTP/1.1\r\ncontent-length: 4\r\n\r\n",
            &mut out,
            &mut events,
        );
        assert_eq!(framing.pass_through(b"abcdef"), 4);
        assert_eq!(framing.pass_through(b"ef"), 0);
    }
}
