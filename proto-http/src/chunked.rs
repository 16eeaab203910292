//! The chunked transfer coding (RFC 9112 section 7.1): a push decoder that reports where
//! data lies in the caller's buffer (no copies), and the encoder's framing bytes.
//!
//! The decoder is strict: hex sizes of at most 16 digits, CRLF (never a bare LF or CR) after
//! every line and after chunk data, extensions and trailers bounded by [`Limits`].
//! Trailers are consumed and dropped; they never reach the forwarded head.

use std::ops::Range;

use crate::{Limits, ParseError};

const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of the size.
    Size,
    /// After the size and whitespace: only more BWS or the ';' of an extension may follow
    /// (RFC 9112 7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name ... )).
    ExtensionBws,
    /// Inside extensions, up to CR.
    Extension,
    /// Saw CR ending the size line.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expect CR after data.
    DataCr,
    /// Expect LF after data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Saw CR inside a trailer line.
    TrailerLf,
    /// Saw CR at the start of a line: the final LF ends the body.
    EndLf,
    Done,
}

/// What one [`ChunkedDecoder::decode`] step found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// All input was framing; give more bytes.
    NeedMore,
    /// Chunk data at this range of the input.
    Data(Range<usize>),
    /// The body (including trailers) ended; the input range consumed tells where.
    Done,
}

/// Incremental decoder: feed it the unconsumed bytes, advance by `consumed`.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u8,
    ext_bytes: usize,
    trailer_bytes: usize,
    max_ext: usize,
    max_trailer: usize,
}

impl ChunkedDecoder {
    pub fn new(limits: &Limits) -> Self {
        Self {
            state: State::Size,
            size: 0,
            digits: 0,
            ext_bytes: 0,
            trailer_bytes: 0,
            max_ext: limits.max_chunk_ext_bytes,
            max_trailer: limits.max_trailer_bytes,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the start of `input`. Returns bytes consumed (data included) and what
    /// was found. Call again with the rest until `NeedMore` or `Done`.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Decoded), ParseError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Data {
                let n = (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Ok((i + n, Decoded::Data(i..i + n)));
            }
            let b = input[i];
            i += 1;
            self.state = match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits == MAX_SIZE_DIGITS {
                            return Err(ParseError::ChunkSizeTooLarge);
                        }
                        self.digits += 1;
                        self.size = (self.size << 4) | u64::from(hex(b));
                        State::Size
                    }
                    _ if self.digits == 0 => return Err(ParseError::ChunkSize),
                    b'\r' => State::SizeLf,
                    b';' => {
                        self.ext_bytes = 1;
                        State::Extension
                    }
                    b' ' | b'\t' => {
                        self.ext_bytes = 1;
                        State::ExtensionBws
                    }
                    b'\n' => return Err(ParseError::ChunkCrlf),
                    _ => return Err(ParseError::ChunkSize),
                },
                State::ExtensionBws => {
                    self.ext_bytes += 1;
                    match b {
                        _ if self.ext_bytes > self.max_ext => return Err(ParseError::ChunkExtension),
                        b' ' | b'\t' => State::ExtensionBws,
                        b';' => State::Extension,
                        _ => return Err(ParseError::ChunkExtension),
                    }
                }
                State::Extension => match b {
                    b'\r' => State::SizeLf,
                    b'\t' | b' '..=b'~' | 0x80..=0xff => {
                        self.ext_bytes += 1;
                        if self.ext_bytes > self.max_ext {
                            return Err(ParseError::ChunkExtension);
                        }
                        State::Extension
                    }
                    _ => return Err(ParseError::ChunkExtension),
                },
                State::SizeLf => match b {
                    b'\n' if self.size == 0 => State::TrailerStart,
                    b'\n' => State::Data,
                    _ => return Err(ParseError::ChunkCrlf),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(ParseError::ChunkCrlf),
                },
                State::DataLf => match b {
                    b'\n' => {
                        self.digits = 0;
                        State::Size
                    }
                    _ => return Err(ParseError::ChunkCrlf),
                },
                State::TrailerStart | State::TrailerLine => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > self.max_trailer {
                        return Err(ParseError::Trailers);
                    }
                    match (self.state, b) {
                        (State::TrailerStart, b'\r') => State::EndLf,
                        (_, b'\r') => State::TrailerLf,
                        (_, b'\t' | b' '..=b'~' | 0x80..=0xff) => State::TrailerLine,
                        _ => return Err(ParseError::Trailers),
                    }
                }
                State::TrailerLf => match b {
                    b'\n' => State::TrailerStart,
                    _ => return Err(ParseError::Trailers),
                },
                State::EndLf => match b {
                    b'\n' => {
                        self.state = State::Done;
                        return Ok((i, Decoded::Done));
                    }
                    _ => return Err(ParseError::Trailers),
                },
                State::Data | State::Done => unreachable!("handled above"),
            };
        }
        if self.state == State::Done {
            return Ok((0, Decoded::Done));
        }
        Ok((i, Decoded::NeedMore))
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// The last-chunk and empty trailer section that end a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends a chunk-size line for `len` bytes of data (`len` must be non-zero).
pub fn encode_chunk_header(out: &mut Vec<u8>, len: usize) {
    debug_assert!(len > 0);
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4);
    for shift in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(len >> (shift * 4)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns the data and the bytes left over.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ParseError> {
        let mut d = ChunkedDecoder::new(&Limits::default());
        let mut data = Vec::new();
        let mut pos = 0;
        let mut avail = step.min(input.len());
        loop {
            let (used, ev) = d.decode(&input[pos..avail])?;
            match ev {
                Decoded::Data(r) => data.extend_from_slice(&input[pos + r.start..pos + r.end]),
                Decoded::Done => return Ok((data, input.len() - pos - used)),
                Decoded::NeedMore if avail == input.len() => return Err(ParseError::ChunkCrlf),
                Decoded::NeedMore => avail = (avail + step).min(input.len()),
            }
            pos += used;
        }
    }

    #[test]
    fn valid_bodies_in_any_split() {
        let cases: &[(&[u8], &[u8], usize)] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello", 0),
            (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET", b"hello world", 3),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", 0),
            (b"5;ext=1\r\nhello\r\n0;x\r\nTrailer: v\r\n\r\n", b"hello", 0),
            (b"5 ;a=\"b\"\r\nhello\r\n0\r\n\r\n", b"hello", 0),
            (b"0\r\n\r\n", b"", 0),
            (b"000000000000005\r\nhello\r\n0\r\n\r\n", b"hello", 0),
        ];
        for (input, want, left) in cases {
            for step in [1, 2, 3, 7, input.len()] {
                let (data, rest) = decode_all(input, step).unwrap_or_else(|e| panic!("{input:?} step {step}: {e}"));
                assert_eq!(&data[..], *want, "{input:?} step {step}");
                assert_eq!(rest, *left, "{input:?} step {step}");
            }
        }
    }

    #[test]
    fn invalid_bodies() {
        use ParseError::*;
        let cases: &[(&[u8], ParseError)] = &[
            (b"x\r\n", ChunkSize),
            (b"\r\n", ChunkSize),
            (b"-5\r\n", ChunkSize),
            (b"0x5\r\n", ChunkSize),
            (b"5\nhello\r\n", ChunkCrlf),
            (b"5\r\nhelloXX0\r\n\r\n", ChunkCrlf),
            (b"5\r\nhello\n0\r\n\r\n", ChunkCrlf),
            (b"5\rhello", ChunkCrlf),
            (b"10000000000000000\r\n", ChunkSizeTooLarge),
            (b"5;a\x00b\r\n", ChunkExtension),
            (b"5 \r\nhello\r\n0\r\n\r\n", ChunkExtension),
            (b"5 x\r\nhello\r\n0\r\n\r\n", ChunkExtension),
            (b"0\r\nX: y\n\r\n", Trailers),
            (b"0\r\n\rX", Trailers),
            (b"0\r\nX: \x01\r\n\r\n", Trailers),
        ];
        for (input, why) in cases {
            assert_eq!(decode_all(input, input.len()).map(|_| ()), Err(*why), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn extension_and_trailer_limits() {
        let limits = Limits { max_chunk_ext_bytes: 4, max_trailer_bytes: 8, ..Limits::default() };
        let mut d = ChunkedDecoder::new(&limits);
        assert_eq!(d.decode(b"1;abcdefgh\r\n"), Err(ParseError::ChunkExtension));
        let mut d = ChunkedDecoder::new(&limits);
        assert_eq!(d.decode(b"0\r\nLong-Trailer: value\r\n\r\n"), Err(ParseError::Trailers));
    }

    #[test]
    fn chunk_header_encoding() {
        for (len, want) in [(1usize, "1\r\n"), (15, "f\r\n"), (16, "10\r\n"), (65536, "10000\r\n")] {
            let mut out = Vec::new();
            encode_chunk_header(&mut out, len);
            assert_eq!(out, want.as_bytes());
        }
    }
}
