//! The proxy listener's first look at the bytes of each request head, before hyper parses it:
//! it refuses the shapes hyper would accept or silently repair, which are the shapes request
//! smuggling is made of (a bare LF or CR as a line end, obs-fold, `Content-Length` together with
//! `Transfer-Encoding`, more than one `Content-Length`, a transfer coding other than `chunked`),
//! and it enforces the head limits (request line, header line, whole head, header count) with
//! a JSON error instead of hyper's empty one. It follows each message's framing (a sized body, or
//! chunked) so every head of a keep-alive connection is checked; after a protocol upgrade it
//! steps aside. A refusal writes one JSON response with `Connection: close` and ends the
//! connection. The request itself never reaches the router, the filters or the upstream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conf::Limits;

/// A refused head: the status, a stable code and a message that names the rule, never the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BareLineEnding,
    ObsFold,
    AmbiguousLength,
    BadContentLength,
    BadTransferEncoding,
    BadChunk,
    BadHeader,
    RequestLineTooLong,
    HeaderTooLarge,
    TooManyHeaders,
    /// A backslash in the path (hyper would refuse it without a body; the path rules say why).
    PathAmbiguous,
}

impl Refusal {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Self::RequestLineTooLong => (414, "URI Too Long"),
            Self::HeaderTooLarge | Self::TooManyHeaders => (431, "Request Header Fields Too Large"),
            _ => (400, "Bad Request"),
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::BareLineEnding => "BARE_LINE_ENDING",
            Self::ObsFold => "OBS_FOLD",
            Self::AmbiguousLength => "AMBIGUOUS_LENGTH",
            Self::BadContentLength => "BAD_CONTENT_LENGTH",
            Self::BadTransferEncoding => "BAD_TRANSFER_ENCODING",
            Self::BadChunk => "BAD_CHUNK",
            Self::BadHeader => "BAD_HEADER",
            Self::RequestLineTooLong => "REQUEST_LINE_TOO_LONG",
            Self::HeaderTooLarge => "HEADER_TOO_LARGE",
            Self::TooManyHeaders => "TOO_MANY_HEADERS",
            Self::PathAmbiguous => crate::path::PathError::Ambiguous.code(),
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::BareLineEnding => "Lines must end with CRLF",
            Self::ObsFold => "Folded header lines (obs-fold) are not accepted",
            Self::AmbiguousLength => {
                "Content-Length may appear once, and not together with Transfer-Encoding"
            }
            Self::BadContentLength => "Content-Length must be a decimal number",
            Self::BadTransferEncoding => "The only transfer coding accepted is chunked",
            Self::BadChunk => "The chunked body is malformed",
            Self::BadHeader => "A header line is malformed",
            Self::RequestLineTooLong => "The request line is longer than the limit",
            Self::HeaderTooLarge => "A header line or the request head is larger than the limit",
            Self::TooManyHeaders => "The request has more headers than the limit",
            Self::PathAmbiguous => crate::path::PathError::Ambiguous.message(),
        }
    }

    /// The whole HTTP/1.1 response, closing the connection.
    pub fn response(self) -> Vec<u8> {
        let (status, reason) = self.status();
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        let body = serde_json::json!({
            "message": self.message(),
            "code": self.code(),
            "request_id": request_id,
        })
        .to_string();
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json; charset=utf-8\r\n\
             content-length: {}\r\nconnection: close\r\nx-kong-request-id: {request_id}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// Where the scanner is in the connection's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// A sized body: this many bytes left.
    Body(u64),
    /// A chunk-size line (size so far, whether a digit was seen, whether past the digits).
    ChunkSize(u64, bool, bool),
    ChunkData(u64),
    /// The CRLF after a chunk's data: how many of its two bytes were seen.
    ChunkEnd(u8),
    /// Trailer lines after the last chunk: the current line's length.
    Trailer(usize),
    /// After an upgrade: bytes pass unseen.
    Tunnel,
}

/// What the head seen so far says.
#[derive(Debug, Default)]
struct Head {
    /// The current line, without its line end.
    line: Vec<u8>,
    saw_request_line: bool,
    bytes: usize,
    headers: usize,
    content_lengths: usize,
    length: Option<u64>,
    transfer_encodings: usize,
    chunked: bool,
    upgrade: bool,
    http10: bool,
}

/// The head limits, from `Limits`.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_line: usize,
    pub max_head: usize,
    pub max_headers: usize,
}

impl From<&Limits> for HeadLimits {
    fn from(l: &Limits) -> Self {
        Self {
            max_line: l.max_line(),
            max_head: l.max_head(),
            max_headers: l.max_headers,
        }
    }
}

pub struct Scanner {
    limits: HeadLimits,
    state: State,
    head: Head,
    prev_cr: bool,
}

impl Scanner {
    pub fn new(limits: HeadLimits) -> Self {
        Self {
            limits,
            state: State::Head,
            head: Head::default(),
            prev_cr: false,
        }
    }

    /// Checks the next bytes the client sent.
    pub fn scan(&mut self, mut bytes: &[u8]) -> Result<(), Refusal> {
        while !bytes.is_empty() {
            match self.state {
                State::Tunnel => return Ok(()),
                State::Body(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[usize::try_from(n).unwrap_or(bytes.len())..];
                    self.state = if n == left {
                        State::Head
                    } else {
                        State::Body(left - n)
                    };
                }
                State::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[usize::try_from(n).unwrap_or(bytes.len())..];
                    self.state = if n == left {
                        State::ChunkEnd(0)
                    } else {
                        State::ChunkData(left - n)
                    };
                }
                _ => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    self.byte(b)?;
                }
            }
        }
        Ok(())
    }

    /// One byte of a head, a chunk-size line, a chunk's CRLF or a trailer.
    fn byte(&mut self, b: u8) -> Result<(), Refusal> {
        // Every line here ends with CRLF: a CR must be followed by LF, an LF preceded by CR.
        if self.prev_cr && b != b'\n' {
            return Err(Refusal::BareLineEnding);
        }
        if b == b'\n' && !self.prev_cr {
            return Err(Refusal::BareLineEnding);
        }
        self.prev_cr = b == b'\r';
        match self.state {
            State::Head => self.head_byte(b),
            State::ChunkSize(size, digits, past) => {
                self.state = match b {
                    b'\r' => State::ChunkSize(size, digits, true),
                    b'\n' if !digits => return Err(Refusal::BadChunk),
                    b'\n' if size == 0 => State::Trailer(0),
                    b'\n' => State::ChunkData(size),
                    _ if past => State::ChunkSize(size, digits, true),
                    _ => match (b as char).to_digit(16) {
                        Some(d) => State::ChunkSize(
                            size.checked_mul(16)
                                .and_then(|s| s.checked_add(u64::from(d)))
                                .ok_or(Refusal::BadChunk)?,
                            true,
                            false,
                        ),
                        // Chunk extensions (`;name=value`) and whitespace before them.
                        None if digits && matches!(b, b';' | b' ' | b'\t') => {
                            State::ChunkSize(size, digits, true)
                        }
                        None => return Err(Refusal::BadChunk),
                    },
                };
                Ok(())
            }
            State::ChunkEnd(seen) => {
                match (seen, b) {
                    (0, b'\r') => self.state = State::ChunkEnd(1),
                    (1, b'\n') => self.state = State::ChunkSize(0, false, false),
                    _ => return Err(Refusal::BadChunk),
                }
                Ok(())
            }
            State::Trailer(len) => {
                self.head.bytes += 1;
                if self.head.bytes > self.limits.max_head {
                    return Err(Refusal::HeaderTooLarge);
                }
                self.state = match b {
                    b'\r' => State::Trailer(len),
                    b'\n' if len == 0 => {
                        self.head = Head::default();
                        State::Head
                    }
                    b'\n' => State::Trailer(0),
                    _ => State::Trailer(len + 1),
                };
                Ok(())
            }
            State::Body(_) | State::ChunkData(_) | State::Tunnel => Ok(()),
        }
    }

    fn head_byte(&mut self, b: u8) -> Result<(), Refusal> {
        let limits = self.limits;
        let head = &mut self.head;
        head.bytes += 1;
        if b == b'\r' {
            return Ok(());
        }
        if b != b'\n' {
            head.line.push(b);
            if head.line.len() > limits.max_line {
                return Err(if head.saw_request_line {
                    Refusal::HeaderTooLarge
                } else {
                    Refusal::RequestLineTooLong
                });
            }
            if head.bytes > limits.max_head {
                return Err(Refusal::HeaderTooLarge);
            }
            return Ok(());
        }
        // A complete line.
        if !head.saw_request_line {
            if head.line.is_empty() {
                // Empty lines before a request line are ignored (RFC 9112 §2.2).
                head.bytes = 0;
                return Ok(());
            }
            head.saw_request_line = true;
            head.http10 = head.line.ends_with(b"HTTP/1.0");
            let path = head.line.split(|&c| c == b' ').nth(1).unwrap_or_default();
            let path = path.split(|&c| c == b'?').next().unwrap_or_default();
            if path.contains(&b'\\') {
                return Err(Refusal::PathAmbiguous);
            }
            let method_end = head.line.iter().position(|&c| c == b' ');
            head.upgrade =
                method_end.is_some_and(|i| head.line[..i].eq_ignore_ascii_case(b"CONNECT"));
            head.line.clear();
            return Ok(());
        }
        if head.line.is_empty() {
            return self.end_of_head();
        }
        if matches!(head.line[0], b' ' | b'\t') {
            return Err(Refusal::ObsFold);
        }
        head.headers += 1;
        if head.headers > limits.max_headers {
            return Err(Refusal::TooManyHeaders);
        }
        let Some(colon) = head.line.iter().position(|&c| c == b':') else {
            return Err(Refusal::BadHeader);
        };
        let (name, value) = (&head.line[..colon], trim(&head.line[colon + 1..]));
        if name.is_empty() || name.iter().any(|&c| matches!(c, b' ' | b'\t')) {
            return Err(Refusal::BadHeader);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            head.content_lengths += 1;
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(Refusal::BadContentLength);
            }
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(Refusal::BadContentLength)?;
            head.length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            head.transfer_encodings += 1;
            if !value.eq_ignore_ascii_case(b"chunked") {
                return Err(Refusal::BadTransferEncoding);
            }
            head.chunked = true;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            head.upgrade = true;
        }
        head.line.clear();
        Ok(())
    }

    fn end_of_head(&mut self) -> Result<(), Refusal> {
        let head = std::mem::take(&mut self.head);
        if head.content_lengths > 1 || (head.content_lengths > 0 && head.transfer_encodings > 0) {
            return Err(Refusal::AmbiguousLength);
        }
        if head.transfer_encodings > 1 || (head.chunked && head.http10) {
            return Err(Refusal::BadTransferEncoding);
        }
        // Keep the line buffer's allocation for the next head.
        self.head.line = head.line;
        self.head.line.clear();
        self.state = if head.upgrade {
            State::Tunnel
        } else if head.chunked {
            State::ChunkSize(0, false, false)
        } else {
            match head.length {
                Some(n) if n > 0 => State::Body(n),
                _ => State::Head,
            }
        };
        Ok(())
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// A client connection whose request heads pass the `Scanner` before hyper reads them.
pub struct Guarded<T> {
    inner: T,
    scanner: Scanner,
    /// A refusal being written: the response and how much of it is out.
    refusal: Option<(Vec<u8>, usize)>,
}

impl<T> Guarded<T> {
    pub fn new(inner: T, limits: HeadLimits) -> Self {
        Self {
            inner,
            scanner: Scanner::new(limits),
            refusal: None,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Guarded<T> {
    /// Writes the refusal, then ends the stream for hyper.
    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((bytes, written)) = &mut self.refusal {
            while *written < bytes.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.refusal.is_some() {
            return this.poll_refuse(cx);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Err(refusal) = this.scanner.scan(&buf.filled()[before..]) {
            tracing::debug!(code = refusal.code(), "request head refused");
            buf.set_filled(before);
            this.refusal = Some((refusal.response(), 0));
            return this.poll_refuse(cx);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.refusal.is_some() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.refusal.is_some() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(bytes: &[u8]) -> Result<(), Refusal> {
        let mut s = Scanner::new(HeadLimits {
            max_line: 64,
            max_head: 256,
            max_headers: 4,
        });
        // Byte by byte and all at once must agree.
        let whole = s.scan(bytes);
        let mut s2 = Scanner::new(s.limits);
        let split = bytes
            .iter()
            .try_for_each(|b| s2.scan(std::slice::from_ref(b)));
        assert_eq!(whole, split);
        whole
    }

    #[test]
    fn well_formed_keep_alive_requests_pass() {
        let two = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
                    POST /y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n\
                    GET / HTTP/1.1\r\n\r\n";
        assert_eq!(scan(two), Ok(()));
        // Body bytes are not taken for a head, and after an upgrade nothing is checked.
        assert_eq!(
            scan(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n\n\n"),
            Ok(())
        );
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\n\x00\r"),
            Ok(())
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cases: [(&[u8], Refusal); 11] = [
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", Refusal::BareLineEnding),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", Refusal::BareLineEnding),
            (
                b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
                Refusal::BareLineEnding,
            ),
            (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", Refusal::ObsFold),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refusal::AmbiguousLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
                Refusal::AmbiguousLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n",
                Refusal::BadContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Refusal::BadTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                Refusal::BadChunk,
            ),
            (b"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n", Refusal::BadHeader),
            (b"GET /a\\b HTTP/1.1\r\n\r\n", Refusal::PathAmbiguous),
        ];
        for (bytes, want) in cases {
            assert_eq!(scan(bytes), Err(want), "{}", String::from_utf8_lossy(bytes));
        }
        // A smuggled second request inside a chunked body's framing is still checked.
        assert_eq!(
            scan(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\nX: y\r\n\r\n"),
            Err(Refusal::BareLineEnding)
        );
    }

    #[test]
    fn head_limits_answer_414_and_431() {
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(80));
        assert_eq!(scan(long_line.as_bytes()), Err(Refusal::RequestLineTooLong));
        let long_header = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(80));
        assert_eq!(scan(long_header.as_bytes()), Err(Refusal::HeaderTooLarge));
        let many = "GET / HTTP/1.1\r\n".to_owned() + &"A: b\r\n".repeat(5) + "\r\n";
        assert_eq!(scan(many.as_bytes()), Err(Refusal::TooManyHeaders));
        let big = "GET / HTTP/1.1\r\n".to_owned() + &format!("A: {}\r\n", "b".repeat(60)).repeat(4);
        assert_eq!(scan(big.as_bytes()), Err(Refusal::HeaderTooLarge));
        assert_eq!(Refusal::TooManyHeaders.status().0, 431);
        assert_eq!(Refusal::RequestLineTooLong.status().0, 414);
    }
}
