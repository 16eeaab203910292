//! Parse errors: small `Copy` values with a static message each. Which status code a peer
//! sees for each is decided by the engine, not here.

use std::fmt;

/// Why a head or a chunked body was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Request line or status line is malformed.
    StartLine,
    /// A method that is not a valid token.
    Method,
    /// A request target that is not origin-, absolute-, authority- or asterisk-form.
    Target,
    /// An HTTP version other than 1.0 or 1.1.
    Version,
    /// A field name with invalid characters or whitespace before the colon.
    HeaderName,
    /// A field value with control characters, bare CR or an obs-fold.
    HeaderValue,
    /// A line not ended by CRLF or LF.
    NewLine,
    /// The head did not end within the head size limit.
    HeadTooLarge,
    /// More header fields than the limit.
    TooManyHeaders,
    /// The request target is longer than the limit.
    UriTooLong,
    /// Content-Length is not a plain run of digits, or overflows.
    ContentLength,
    /// Several Content-Length values that differ.
    ConflictingLength,
    /// Content-Length together with Transfer-Encoding.
    LengthWithTransferEncoding,
    /// Transfer-Encoding whose final coding is not `chunked`, or `chunked` applied twice.
    ChunkedNotFinal,
    /// A transfer coding other than `chunked`.
    UnsupportedCoding,
    /// Transfer-Encoding in an HTTP/1.0 message.
    TransferEncodingHttp10,
    /// HTTP/1.1 request without Host.
    MissingHost,
    /// Several Host fields, or a Host list.
    DuplicateHost,
    /// Host (or the authority of an absolute-form target) is not a valid authority.
    BadHost,
    /// An Expect value other than `100-continue`.
    Expectation,
    /// Chunk size is not hexadecimal.
    ChunkSize,
    /// Chunk size has more digits than fit in 64 bits.
    ChunkSizeTooLarge,
    /// Chunk extensions longer than the limit, or with control characters.
    ChunkExtension,
    /// Chunk data not followed by CRLF, or a chunk line ended by a bare LF or CR.
    ChunkCrlf,
    /// Trailer section longer than the limit or malformed.
    Trailers,
    /// A status code outside 100..=999.
    Status,
    /// A byte a path may not hold (RFC 3986 3.3), found while normalising it.
    PathCharacter,
    /// A `%` in the path not followed by two hex digits, or `%00`.
    PathEncoding,
    /// An encoded `/` or `\` in the path, where configured to be refused.
    EncodedSlash,
    /// Max-Forwards that is not one run of digits (a list, several fields, a sign).
    MaxForwards,
    /// A TRACE request with content (RFC 9110 9.3.8).
    TraceContent,
}

impl ParseError {
    /// A short, static description suitable for logs and error bodies.
    pub const fn message(self) -> &'static str {
        match self {
            Self::StartLine => "malformed start line",
            Self::Method => "invalid method",
            Self::Target => "invalid request target",
            Self::Version => "unsupported HTTP version",
            Self::HeaderName => "invalid header field name",
            Self::HeaderValue => "invalid header field value",
            Self::NewLine => "invalid line ending",
            Self::HeadTooLarge => "header section too large",
            Self::TooManyHeaders => "too many header fields",
            Self::UriTooLong => "request target too long",
            Self::ContentLength => "invalid Content-Length",
            Self::ConflictingLength => "conflicting Content-Length values",
            Self::LengthWithTransferEncoding => "both Content-Length and Transfer-Encoding",
            Self::ChunkedNotFinal => "chunked is not the final transfer coding",
            Self::UnsupportedCoding => "unsupported transfer coding",
            Self::TransferEncodingHttp10 => "Transfer-Encoding in an HTTP/1.0 message",
            Self::MissingHost => "missing Host",
            Self::DuplicateHost => "more than one Host",
            Self::BadHost => "invalid Host",
            Self::Expectation => "unsupported expectation",
            Self::ChunkSize => "invalid chunk size",
            Self::ChunkSizeTooLarge => "chunk size too large",
            Self::ChunkExtension => "invalid or oversized chunk extension",
            Self::ChunkCrlf => "chunk not terminated by CRLF",
            Self::Trailers => "invalid or oversized trailer section",
            Self::Status => "invalid status code",
            Self::PathCharacter => "invalid character in the path",
            Self::PathEncoding => "invalid percent-encoding in the path",
            Self::EncodedSlash => "encoded slash in the path",
            Self::MaxForwards => "invalid Max-Forwards",
            Self::TraceContent => "TRACE with content",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ParseError {}

impl From<httparse::Error> for ParseError {
    fn from(e: httparse::Error) -> Self {
        match e {
            httparse::Error::HeaderName => Self::HeaderName,
            httparse::Error::HeaderValue => Self::HeaderValue,
            httparse::Error::NewLine => Self::NewLine,
            httparse::Error::Status => Self::Status,
            httparse::Error::Token => Self::Method,
            httparse::Error::TooManyHeaders => Self::TooManyHeaders,
            httparse::Error::Version => Self::Version,
        }
    }
}
