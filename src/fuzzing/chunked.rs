//! Chunked bodies: the decoder over arbitrary bytes, and encode-then-decode.

use super::{Cursor, text};
use crate::http::chunked::{ChunkError, ChunkedDecoder};

/// Most chunks one input is encoded as.
const MAX_CHUNKS: usize = 64;
/// Stands for the next message on the connection, after a body.
const NEXT: &[u8] = b"GET /next HTTP/1.1\r\n\r\n";

/// What feeding a body gives: the output, bytes consumed, finished or the error.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    out: Vec<u8>,
    consumed: usize,
    result: Result<bool, ChunkError>,
}

/// Decodes `data` as a chunked body (whole, byte at a time, data only), then reads
/// `data` as a plan for a body to encode and decode back.
pub fn chunked(data: &[u8]) {
    let whole = feed_whole(ChunkedDecoder::new(), data);
    let bytewise = feed_bytewise(ChunkedDecoder::new(), data);
    assert_eq!(whole, bytewise, "byte at a time differs: {:?}", text(data));
    let plain = feed_whole(ChunkedDecoder::data_only(), data);
    assert_eq!(
        (plain.consumed, plain.result),
        (whole.consumed, whole.result)
    );
    if let Ok(finished) = whole.result {
        assert!(whole.consumed <= data.len());
        assert!(finished || whole.consumed == data.len());
    }
    if whole.result == Ok(true) {
        // The canonical form is a fixed point and carries the same data.
        let again = feed_whole(ChunkedDecoder::new(), &whole.out);
        assert_eq!(
            again.out,
            whole.out,
            "not canonical: {:?}",
            text(&whole.out)
        );
        assert_eq!((again.consumed, again.result), (whole.out.len(), Ok(true)));
        let mut dec = ChunkedDecoder::data_only();
        let mut out = Vec::new();
        assert_eq!(dec.feed(&whole.out, &mut out), Ok((whole.out.len(), true)));
        assert_eq!(out, plain.out);
        assert_eq!(dec.data_len(), out.len() as u64);
    }
    roundtrip(data);
}

fn feed_whole(mut dec: ChunkedDecoder, input: &[u8]) -> Outcome {
    let mut out = Vec::new();
    let (consumed, result) = match dec.feed(input, &mut out) {
        Ok((n, done)) => {
            assert_eq!(done, dec.is_finished());
            (n, Ok(done))
        }
        Err(e) => {
            // Errors are sticky.
            assert_eq!(dec.feed(b"0\r\n\r\n", &mut Vec::new()), Err(e));
            (0, Err(e))
        }
    };
    Outcome {
        out,
        consumed,
        result,
    }
}

fn feed_bytewise(mut dec: ChunkedDecoder, input: &[u8]) -> Outcome {
    let mut out = Vec::new();
    let mut consumed = 0;
    for b in input.chunks(1) {
        match dec.feed(b, &mut out) {
            Ok((n, true)) => {
                return Outcome {
                    out,
                    consumed: consumed + n,
                    result: Ok(true),
                };
            }
            Ok((n, false)) => consumed += n,
            Err(e) => {
                return Outcome {
                    out,
                    consumed: 0,
                    result: Err(e),
                };
            }
        }
    }
    Outcome {
        out,
        consumed,
        result: Ok(false),
    }
}

/// Encodes the chunks `data` describes in a valid but non-canonical spelling, then
/// decodes: the canonical encoding and the data come back, and decoding stops at the
/// end of the body.
fn roundtrip(data: &[u8]) {
    let mut c = Cursor::new(data);
    let flags = c.byte();
    let upper = flags & 1 != 0;
    let pad = usize::from((flags >> 1) & 3);
    let ext: &[u8] = match (flags >> 3) & 3 {
        0 => b"",
        1 => b";",
        2 => b";a=b",
        _ => b"; q=\"x y\"\t;r",
    };
    let trailers: &[u8] = match (flags >> 5) & 3 {
        0 => b"",
        1 => b"X-Trailer: v\r\n",
        2 => b"A:\r\nB: \tc\r\n",
        _ => b"Digest: sha-256=x\xff\r\n",
    };
    let mut chunks = Vec::new();
    while !c.is_empty() && chunks.len() < MAX_CHUNKS {
        let n = usize::from(c.byte() % 40);
        chunks.push(c.take(n));
    }
    let mut input = Vec::new();
    let mut canonical = Vec::new();
    for chunk in chunks.iter().filter(|c| !c.is_empty()) {
        input.extend(std::iter::repeat_n(b'0', pad));
        let size = if upper {
            format!("{:X}", chunk.len())
        } else {
            format!("{:x}", chunk.len())
        };
        input.extend_from_slice(size.as_bytes());
        input.extend_from_slice(ext);
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(chunk);
        input.extend_from_slice(b"\r\n");
        canonical.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        canonical.extend_from_slice(chunk);
        canonical.extend_from_slice(b"\r\n");
    }
    input.extend(std::iter::repeat_n(b'0', pad + 1));
    input.extend_from_slice(ext);
    input.extend_from_slice(b"\r\n");
    input.extend_from_slice(trailers);
    input.extend_from_slice(b"\r\n");
    canonical.extend_from_slice(b"0\r\n\r\n");
    let body_len = input.len();
    input.extend_from_slice(NEXT);

    let shown = || text(&input);
    let whole = feed_whole(ChunkedDecoder::new(), &input);
    assert_eq!(whole.result, Ok(true), "{}", shown());
    assert_eq!(whole.consumed, body_len, "{}", shown());
    assert_eq!(whole.out, canonical, "{}", shown());
    assert_eq!(feed_bytewise(ChunkedDecoder::new(), &input), whole);
    let plain = feed_whole(ChunkedDecoder::data_only(), &input);
    assert_eq!(plain.out, chunks.concat(), "{}", shown());
}
