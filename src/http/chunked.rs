//! Incremental, strict decoder for chunked bodies (RFC 9112 §7.1) that re-emits the body
//! in one canonical form, so the peer it is forwarded to can read it only one way.
//!
//! Accepted input, and nothing else (anything else is a [`ChunkError`]: the caller
//! answers 400 for a request body, treats a response body as a broken target, and in
//! both cases closes the connection, whose framing can no longer be trusted):
//! - a chunk size is one or more hex digits and nothing else (no sign, no `0x`, no
//!   whitespace anywhere, not even before `;`), with a value below 2^63;
//! - chunk extensions (`;` up to the end of the line) are checked only for control
//!   characters (HTAB is allowed) and dropped;
//! - every line ends in CRLF: a bare LF or a CR not followed by LF is an error;
//! - the size line (digits and extensions) is at most [`MAX_SIZE_LINE`] bytes, the
//!   trailer section at most [`MAX_TRAILER_SECTION`]; each trailer line is a token name,
//!   `:`, and a value without control characters (no obs-fold); trailers are dropped.
//!
//! Output, appended to the caller's buffer: `{lowercase hex size}\r\n{data}\r\n` for each
//! non-empty chunk and `0\r\n\r\n` once the whole body, trailers included, has been read
//! (or, from [`ChunkedDecoder::data_only`], the data bytes alone, for an HTTP/1.0 client).
//! Data bytes are copied once, from the input straight into `out`.

use std::fmt;

#[cfg(test)]
mod tests;

/// Longest chunk-size line (hex digits plus extensions, without its CRLF), bytes.
pub const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section (all trailer lines and the final CRLF), bytes.
pub const MAX_TRAILER_SECTION: usize = 16 * 1024;
/// Largest chunk size accepted: sizes must fit in 63 bits, which every peer can store.
const MAX_CHUNK_SIZE: u64 = i64::MAX as u64;

/// Why a chunked body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// Bad syntax; the reason is a short name such as `ChunkSize` or `BareLf`.
    Malformed(&'static str),
    /// A chunk size of 2^63 or more, a size line over [`MAX_SIZE_LINE`], or a trailer
    /// section over [`MAX_TRAILER_SECTION`].
    TooLarge,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::Malformed(why) => write!(f, "malformed chunked body: {why}"),
            ChunkError::TooLarge => f.write_str("chunked body framing over the size limits"),
        }
    }
}

impl std::error::Error for ChunkError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting the first hex digit of a size line.
    SizeStart,
    /// In the hex digits.
    Size,
    /// After `;`, up to CR.
    Ext,
    /// Size line ended in CR; expecting LF.
    SizeLf,
    /// In chunk data; `remaining` bytes left.
    Data,
    /// After the data, expecting CR then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line or of the final empty line.
    TrailerStart,
    TrailerName,
    TrailerValue,
    /// A trailer line ended in CR; expecting LF.
    TrailerLf,
    /// The final empty line's CR seen; expecting LF.
    EndLf,
    Done,
    Failed(ChunkError),
}

/// Decodes one chunked body fed in pieces of any size. Reuse needs a fresh value per body.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// The size being read, then the data bytes left in the current chunk.
    remaining: u64,
    /// Bytes of the current size line so far.
    line_len: usize,
    /// Bytes of the trailer section so far.
    trailer_len: usize,
    data_only: bool,
    data_len: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder that re-encodes the body canonically (for an HTTP/1.1 peer).
    pub const fn new() -> Self {
        ChunkedDecoder {
            state: State::SizeStart,
            remaining: 0,
            line_len: 0,
            trailer_len: 0,
            data_only: false,
            data_len: 0,
        }
    }

    /// A decoder that writes only the data bytes: for relaying a chunked response to an
    /// HTTP/1.0 client, whose body then ends when the connection closes.
    pub const fn data_only() -> Self {
        let mut d = Self::new();
        d.data_only = true;
        d
    }

    /// True once the final chunk and the trailer section have been read.
    pub fn is_finished(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes decoded so far (the body length without chunk framing).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Feeds `input`; appends the re-encoded form of what it completes to `out`.
    /// Returns (bytes consumed, finished). All of `input` is consumed unless the body
    /// ends inside it: then consumption stops right after the final CRLF, and the bytes
    /// after it belong to the next message. Once finished, returns `Ok((0, true))`.
    /// After an error every later call returns the same error; `out` may then hold a
    /// prefix of the re-encoded body, and the connection must be closed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), ChunkError> {
        if let State::Failed(e) = self.state {
            return Err(e);
        }
        let result = self.run(input, out);
        if let Err(e) = result {
            self.state = State::Failed(e);
        }
        result
    }

    fn run(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), ChunkError> {
        let mut i = 0;
        while let Some(rest) = input.get(i..).filter(|r| !r.is_empty()) {
            match self.state {
                State::Done => return Ok((i, true)),
                State::Data => {
                    let n =
                        usize::try_from(self.remaining).map_or(rest.len(), |r| r.min(rest.len()));
                    out.extend_from_slice(&rest[..n]);
                    i += n;
                    self.remaining -= n as u64;
                    self.data_len = self.data_len.saturating_add(n as u64);
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    i += 1;
                    self.step(rest[0], out)?;
                }
            }
        }
        Ok((i, self.state == State::Done))
    }

    /// Advances the state machine over one framing byte.
    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> Result<(), ChunkError> {
        use ChunkError::{Malformed, TooLarge};
        match self.state {
            State::SizeStart => {
                let d = hex_value(b).ok_or(Malformed("ChunkSize"))?;
                self.remaining = d;
                self.line_len = 1;
                self.state = State::Size;
            }
            State::Size => {
                self.size_line_byte()?;
                if let Some(d) = hex_value(b) {
                    if self.remaining > (MAX_CHUNK_SIZE - d) / 16 {
                        return Err(TooLarge);
                    }
                    self.remaining = self.remaining * 16 + d;
                } else {
                    self.state = match b {
                        b';' => State::Ext,
                        b'\r' => State::SizeLf,
                        b'\n' => return Err(Malformed("BareLf")),
                        _ => return Err(Malformed("ChunkSize")),
                    };
                }
            }
            State::Ext => match b {
                b'\r' => self.state = State::SizeLf,
                b'\n' => return Err(Malformed("BareLf")),
                b'\t' | 0x20..=0x7e | 0x80..=0xff => self.size_line_byte()?,
                _ => return Err(Malformed("ChunkExtension")),
            },
            State::SizeLf => {
                if b != b'\n' {
                    return Err(Malformed("BareCr"));
                }
                if self.remaining == 0 {
                    self.trailer_len = 0;
                    self.state = State::TrailerStart;
                } else {
                    if !self.data_only {
                        push_hex(out, self.remaining);
                        out.extend_from_slice(b"\r\n");
                    }
                    self.state = State::Data;
                }
            }
            State::DataCr if b == b'\r' => self.state = State::DataLf,
            State::DataLf if b == b'\n' => {
                if !self.data_only {
                    out.extend_from_slice(b"\r\n");
                }
                self.state = State::SizeStart;
            }
            State::DataCr | State::DataLf => return Err(Malformed("ChunkDataEnd")),
            State::TrailerStart
            | State::TrailerName
            | State::TrailerValue
            | State::TrailerLf
            | State::EndLf => {
                self.trailer_len += 1;
                if self.trailer_len > MAX_TRAILER_SECTION {
                    return Err(TooLarge);
                }
                self.state = self.trailer_step(b)?;
                if self.state == State::Done && !self.data_only {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
            }
            // `run` handles these before calling `step`; `feed` never runs after a failure.
            State::Data | State::Done | State::Failed(_) => {
                debug_assert!(false, "step called in state {:?}", self.state);
            }
        }
        Ok(())
    }

    fn trailer_step(&self, b: u8) -> Result<State, ChunkError> {
        let bad = ChunkError::Malformed("Trailer");
        Ok(match (self.state, b) {
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart | State::TrailerName, b) if is_tchar(b) => State::TrailerName,
            (State::TrailerName, b':') => State::TrailerValue,
            (State::TrailerValue, b'\r') => State::TrailerLf,
            (State::TrailerValue, b'\t' | 0x20..=0x7e | 0x80..=0xff) => State::TrailerValue,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::EndLf, b'\n') => State::Done,
            (State::TrailerLf | State::EndLf, _) => return Err(ChunkError::Malformed("BareCr")),
            (_, b'\n') => return Err(ChunkError::Malformed("BareLf")),
            _ => return Err(bad),
        })
    }

    fn size_line_byte(&mut self) -> Result<(), ChunkError> {
        self.line_len += 1;
        if self.line_len > MAX_SIZE_LINE {
            return Err(ChunkError::TooLarge);
        }
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// RFC 9110 `tchar`: the bytes of a token.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Appends `n` in lowercase hex without leading zeros (`0` for zero).
fn push_hex(out: &mut Vec<u8>, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut at = buf.len();
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = DIGITS[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}
