//! The engine's one error type: what went wrong, on which side, with a static context and
//! an optional I/O cause; and the one function that maps errors to status codes.

use std::fmt;
use std::io;

use proto_http::ParseError;

/// Which peer an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Upstream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The peer sent bytes that break HTTP/1.1.
    Malformed(ParseError),
    /// A read or write failed.
    Io,
    /// The peer did not make progress in time.
    Timeout,
    /// The peer closed before its message was complete.
    Closed,
    /// No route matches the request.
    NoRoute,
    /// A method the gateway does not proxy (CONNECT).
    MethodNotImplemented,
    /// A method the gateway refuses (TRACE unless `server.allow_trace`).
    MethodNotAllowed,
    /// The request already passed through this gateway (`server.via`).
    Loop,
    /// The request body exceeds `limits.max_body_bytes`.
    BodyTooLarge,
    /// No endpoint of the upstream accepted a connection.
    Connect,
    /// Connecting to the upstream timed out.
    ConnectTimeout,
    /// The upstream answered 101 although no upgrade was forwarded.
    UnexpectedUpgrade,
    /// The upstream has `max_requests` in flight.
    Overloaded,
    /// A client spoke plain HTTP to a TLS listener.
    PlainHttpOnTls,
}

#[derive(Debug)]
pub(crate) struct Error {
    pub kind: Kind,
    pub side: Side,
    pub context: &'static str,
    pub cause: Option<io::Error>,
}

impl Error {
    pub(crate) fn new(kind: Kind, side: Side, context: &'static str) -> Self {
        Self { kind, side, context, cause: None }
    }

    /// Classifies an I/O error: timeouts become [`Kind::Timeout`].
    pub(crate) fn io(side: Side, context: &'static str, e: io::Error) -> Self {
        if crate::tls::PlainHttpOnTls::caused(&e) {
            return Self::new(Kind::PlainHttpOnTls, side, crate::tls::PlainHttpOnTls::DETAIL);
        }
        let kind = if e.kind() == io::ErrorKind::TimedOut { Kind::Timeout } else { Kind::Io };
        Self { kind, side, context, cause: Some(e) }
    }

    pub(crate) fn malformed(side: Side, e: ParseError) -> Self {
        Self::new(Kind::Malformed(e), side, e.message())
    }

    /// The status code a client sees for this error, or `None` when no response can or
    /// should be sent (the client itself broke the connection).
    pub(crate) fn status(&self) -> Option<u16> {
        Some(match (self.kind, self.side) {
            (Kind::Malformed(e), Side::Client) => match e {
                ParseError::HeadTooLarge | ParseError::TooManyHeaders => 431,
                ParseError::UriTooLong => 414,
                ParseError::Version => 505,
                ParseError::UnsupportedCoding => 501,
                ParseError::Expectation => 417,
                _ => 400,
            },
            (Kind::Timeout, Side::Client) => 408,
            (Kind::PlainHttpOnTls, _) => 400,
            (Kind::Io | Kind::Closed, Side::Client) => return None,
            (
                Kind::Malformed(_) | Kind::Io | Kind::Closed | Kind::UnexpectedUpgrade | Kind::Connect,
                Side::Upstream,
            ) => 502,
            (Kind::Timeout | Kind::ConnectTimeout, Side::Upstream) => 504,
            (Kind::NoRoute, _) => 404,
            (Kind::MethodNotImplemented, _) => 501,
            (Kind::MethodNotAllowed, _) => 405,
            (Kind::Loop, _) => 508,
            (Kind::BodyTooLarge, _) => 413,
            (Kind::Overloaded, _) => 503,
            (Kind::Connect | Kind::ConnectTimeout | Kind::UnexpectedUpgrade, Side::Client) => 502,
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.side {
            Side::Client => "client",
            Side::Upstream => "upstream",
        };
        write!(f, "{side}: {}", self.context)?;
        if let Some(cause) = &self.cause {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        let e = |k, s| Error::new(k, s, "t").status();
        assert_eq!(e(Kind::Malformed(ParseError::ContentLength), Side::Client), Some(400));
        assert_eq!(e(Kind::Malformed(ParseError::HeadTooLarge), Side::Client), Some(431));
        assert_eq!(e(Kind::Malformed(ParseError::UriTooLong), Side::Client), Some(414));
        assert_eq!(e(Kind::Malformed(ParseError::Version), Side::Client), Some(505));
        assert_eq!(e(Kind::Malformed(ParseError::UnsupportedCoding), Side::Client), Some(501));
        assert_eq!(e(Kind::Malformed(ParseError::ContentLength), Side::Upstream), Some(502));
        assert_eq!(e(Kind::Timeout, Side::Upstream), Some(504));
        assert_eq!(e(Kind::Timeout, Side::Client), Some(408));
        assert_eq!(e(Kind::Io, Side::Client), None);
        assert_eq!(e(Kind::NoRoute, Side::Client), Some(404));
        assert_eq!(e(Kind::MethodNotAllowed, Side::Client), Some(405));
        assert_eq!(e(Kind::BodyTooLarge, Side::Client), Some(413));
        assert_eq!(e(Kind::Connect, Side::Upstream), Some(502));
        assert_eq!(e(Kind::Overloaded, Side::Upstream), Some(503));
    }
}
