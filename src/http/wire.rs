//! HTTP/1.1 on the wire, as pure functions: the request head parsed within its limits, and a
//! response rendered. No I/O here (`server.rs` reads and writes the sockets).

use super::limits::{HEADERS_MAX, HEAD_BYTES_MAX, REQUEST_LINE_BYTES_MAX};

/// A request's line and headers, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// The request target as sent: the path and the query.
    pub target: String,
    /// `HTTP/1.<minor>`.
    pub minor: u8,
    pub headers: Vec<(String, String)>,
    /// Bytes of the head, its blank line included: the body starts there.
    pub len: usize,
}

impl Head {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The body's length (`Content-Length`, 0 without).
    pub fn content_length(&self) -> Result<usize, HeadError> {
        match self.header("Content-Length") {
            None => Ok(0),
            Some(value) => value.trim().parse().map_err(|_| {
                HeadError::Malformed(format!("Content-Length {value:?} is not a number"))
            }),
        }
    }

    /// Whether the connection stays open after the answer (HTTP/1.1 unless `close`,
    /// HTTP/1.0 only with `keep-alive`).
    pub fn keep_alive(&self) -> bool {
        let connection = self
            .header("Connection")
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        if connection.contains("close") {
            return false;
        }
        self.minor >= 1 || connection.contains("keep-alive")
    }

    /// `Expect: 100-continue`: the client waits for a go-ahead before it sends the body.
    pub fn expects_continue(&self) -> bool {
        self.header("Expect")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
    }
}

/// The first header named `name` (case-insensitive) of `headers`.
pub fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Why a request head is refused, with the status it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// 414: the request line exceeds `REQUEST_LINE_BYTES_MAX`.
    LineTooLong,
    /// 431: the head exceeds `HEAD_BYTES_MAX`, or has more than `HEADERS_MAX` headers.
    TooLarge(String),
    /// 400.
    Malformed(String),
    /// 505.
    Version(String),
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::LineTooLong => 414,
            HeadError::TooLarge(_) => 431,
            HeadError::Malformed(_) => 400,
            HeadError::Version(_) => 505,
        }
    }

    pub fn message(&self) -> String {
        match self {
            HeadError::LineTooLong => {
                format!("the request line exceeds {REQUEST_LINE_BYTES_MAX} bytes")
            }
            HeadError::TooLarge(why) | HeadError::Malformed(why) | HeadError::Version(why) => {
                why.clone()
            }
        }
    }
}

/// Parses the head at the start of `buf`: `Ok(None)` while it is incomplete (and within its
/// limits).
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let line_end = memchr::memchr(b'\n', buf);
    if line_end.map_or(buf.len(), |n| n + 1) > REQUEST_LINE_BYTES_MAX {
        return Err(HeadError::LineTooLong);
    }
    let Some(len) = memchr::memmem::find(buf, b"\r\n\r\n").map(|n| n + 4) else {
        if buf.len() > HEAD_BYTES_MAX {
            return Err(HeadError::TooLarge(format!(
                "the request head exceeds {HEAD_BYTES_MAX} bytes"
            )));
        }
        return Ok(None);
    };
    if len > HEAD_BYTES_MAX {
        return Err(HeadError::TooLarge(format!(
            "the request head exceeds {HEAD_BYTES_MAX} bytes"
        )));
    }
    let text = std::str::from_utf8(&buf[..len - 4])
        .map_err(|_| HeadError::Malformed("the request head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut words = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(HeadError::Malformed(format!(
            "the request line {:?} is not `METHOD TARGET HTTP/1.1`",
            truncate(line)
        )));
    };
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        other => {
            return Err(HeadError::Version(format!(
                "{:?} is not HTTP/1.0 or HTTP/1.1",
                truncate(other)
            )))
        }
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HeadError::Malformed(format!(
            "the method {:?} is not a method",
            truncate(method)
        )));
    }
    if !target.starts_with('/') {
        return Err(HeadError::Malformed(format!(
            "the target {:?} is not a path",
            truncate(target)
        )));
    }
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() == HEADERS_MAX {
            return Err(HeadError::TooLarge(format!(
                "the request has more than {HEADERS_MAX} headers"
            )));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HeadError::Malformed(format!(
                "the header line {:?} has no colon",
                truncate(line)
            )));
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(HeadError::Malformed(format!(
                "the header name {:?} is not a name",
                truncate(name)
            )));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Some(Head {
        method: method.to_string(),
        target: target.to_string(),
        minor,
        headers,
        len,
    }))
}

/// At most 64 characters of what a client sent, for a message.
fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

/// The reason phrase of the statuses we send.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// A whole response: status line, `Content-Type`, `Content-Length`, `X-Request-Id`,
/// `Connection: close` when the connection closes after it, then the body.
pub fn render(
    status: u16,
    content_type: &str,
    body: &[u8],
    request_id: &str,
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 160);
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            reason(status),
            body.len()
        )
        .as_bytes(),
    );
    if !request_id.is_empty() {
        out.extend_from_slice(format!("X-Request-Id: {request_id}\r\n").as_bytes());
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The head of an answer whose body follows in chunks (`Transfer-Encoding: chunked`).
pub fn render_chunked_head(
    status: u16,
    content_type: &str,
    request_id: &str,
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n",
        reason(status)
    )
    .into_bytes();
    if !request_id.is_empty() {
        out.extend_from_slice(format!("X-Request-Id: {request_id}\r\n").as_bytes());
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `data` as one chunk of a chunked body (`data` is not empty: an empty chunk ends it).
pub fn chunk(data: &[u8]) -> Vec<u8> {
    debug_assert!(!data.is_empty(), "an empty chunk would end the body");
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The chunk that ends a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_answer_is_a_head_chunks_and_the_last_chunk() {
        let head = String::from_utf8(render_chunked_head(200, "text/plain", "r-1", false)).unwrap();
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\
             X-Request-Id: r-1\r\nConnection: close\r\n\r\n"
        );
        assert!(!head.contains("Content-Length"));
        assert_eq!(chunk(b"abc"), b"3\r\nabc\r\n");
        assert_eq!(chunk(&[b'x'; 26])[..4], *b"1a\r\n");
        assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
    }

    #[test]
    fn a_head_in_pieces() {
        let text = b"GET /state?x=1 HTTP/1.1\r\nHost: a\r\nX-Request-Id: r1\r\n\r\nrest";
        for cut in 0..text.len() - 4 {
            assert_eq!(parse_head(&text[..cut]), Ok(None), "cut at {cut}");
        }
        let head = parse_head(text).unwrap().unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/state?x=1");
        assert_eq!(head.header("x-request-id"), Some("r1"));
        assert_eq!(head.len, text.len() - 4);
        assert!(head.keep_alive());
        assert_eq!(head.content_length(), Ok(0));
    }

    #[test]
    fn limits_of_a_head() {
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(REQUEST_LINE_BYTES_MAX));
        assert_eq!(parse_head(long.as_bytes()), Err(HeadError::LineTooLong));
        assert_eq!(
            parse_head("a".repeat(REQUEST_LINE_BYTES_MAX + 1).as_bytes()),
            Err(HeadError::LineTooLong)
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(HEAD_BYTES_MAX));
        assert_eq!(parse_head(big.as_bytes()).map_err(|e| e.status()), Err(431));
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=HEADERS_MAX {
            many.push_str(&format!("X-{i}: 1\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            parse_head(many.as_bytes()).map_err(|e| e.status()),
            Err(431)
        );
        for bad in [
            "GET\r\n\r\n",
            "GET / HTTP/2\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn http_1_0_closes_unless_asked() {
        let head = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!head.keep_alive());
        let head = parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.keep_alive());
        let head = parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!head.keep_alive());
    }

    #[test]
    fn a_response() {
        let out = render(200, "application/json", b"{}", "r1", false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             X-Request-Id: r1\r\nConnection: close\r\n\r\n{}"
        );
    }
}
