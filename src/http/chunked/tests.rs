use super::*;
use proptest::prelude::*;

/// What feeding a whole input produced: output, bytes consumed, and finished or the error.
type Outcome = (Vec<u8>, usize, Result<bool, ChunkError>);

/// Feeds `input` cut at `cuts` (sorted offsets), stopping where the body ends.
fn feed_split(mut dec: ChunkedDecoder, input: &[u8], cuts: &[usize]) -> Outcome {
    let mut out = Vec::new();
    let mut start = 0;
    let ends = cuts.iter().copied().chain(std::iter::once(input.len()));
    for end in ends {
        let end = end.clamp(start, input.len());
        match dec.feed(&input[start..end], &mut out) {
            Ok((n, true)) => return (out, start + n, Ok(true)),
            Ok((n, false)) => {
                assert_eq!(n, end - start, "an unfinished feed consumes all its input");
                start = end;
            }
            // Where the error lies is not reported; what was emitted before it is.
            Err(e) => return (out, 0, Err(e)),
        }
    }
    (out, start, Ok(false))
}

fn feed_all(input: &[u8]) -> Outcome {
    feed_split(ChunkedDecoder::new(), input, &[])
}

fn refused(input: &[u8]) -> ChunkError {
    match feed_all(input).2 {
        Err(e) => e,
        Ok(done) => panic!(
            "{:?} accepted (finished: {done})",
            String::from_utf8_lossy(input)
        ),
    }
}

const MULTI: &[u8] = b"5\r\nhello\r\n1;name=val\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n";
const MULTI_OUT: &[u8] = b"5\r\nhello\r\n1\r\n \r\na\r\n0123456789\r\n0\r\n\r\n";

#[test]
fn multi_chunk_body_is_reencoded_canonically() {
    let (out, n, done) = feed_all(MULTI);
    assert_eq!(out, MULTI_OUT);
    assert_eq!((n, done), (MULTI.len(), Ok(true)));
}

#[test]
fn every_single_split_point_gives_the_same_output() {
    for cut in 0..=MULTI.len() {
        let got = feed_split(ChunkedDecoder::new(), MULTI, &[cut]);
        assert_eq!(
            got,
            (MULTI_OUT.to_vec(), MULTI.len(), Ok(true)),
            "cut at {cut}"
        );
    }
}

#[test]
fn every_pair_of_split_points_gives_the_same_output() {
    for a in 0..=MULTI.len() {
        for b in a..=MULTI.len() {
            let got = feed_split(ChunkedDecoder::new(), MULTI, &[a, b]);
            assert_eq!(got.0, MULTI_OUT, "cuts at {a}, {b}");
            assert_eq!((got.1, got.2), (MULTI.len(), Ok(true)));
        }
    }
}

#[test]
fn byte_at_a_time_gives_the_same_output() {
    let cuts: Vec<usize> = (1..MULTI.len()).collect();
    assert_eq!(feed_split(ChunkedDecoder::new(), MULTI, &cuts).0, MULTI_OUT);
}

#[test]
fn bytes_after_the_body_are_left_unconsumed() {
    let mut input = MULTI.to_vec();
    input.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
    let mut dec = ChunkedDecoder::new();
    let mut out = Vec::new();
    assert_eq!(dec.feed(&input, &mut out), Ok((MULTI.len(), true)));
    assert!(dec.is_finished());
    assert_eq!(dec.feed(b"more", &mut out), Ok((0, true)));
    assert_eq!(out, MULTI_OUT);
    assert_eq!(dec.data_len(), 16);
}

#[test]
fn accepted_bodies() {
    let cases: &[(&str, &[u8], &[u8])] = &[
        ("empty body", b"0\r\n\r\n", b"0\r\n\r\n"),
        (
            "leading zeros",
            b"0004\r\nabcd\r\n000\r\n\r\n",
            b"4\r\nabcd\r\n0\r\n\r\n",
        ),
        (
            "upper-case hex",
            b"1F\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n",
            b"1f\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n",
        ),
        (
            "extension on the last chunk",
            b"0;done\r\n\r\n",
            b"0\r\n\r\n",
        ),
        (
            "quoted extension",
            b"2;a=\"x y\";b\r\nhi\r\n0\r\n\r\n",
            b"2\r\nhi\r\n0\r\n\r\n",
        ),
        (
            "extension with tab and obs-text",
            b"2;a=\t\xff\r\nhi\r\n0\r\n\r\n",
            b"2\r\nhi\r\n0\r\n\r\n",
        ),
        (
            "trailers dropped",
            b"2\r\nhi\r\n0\r\nX-Sum: 1\r\nX-Other:\r\n\r\n",
            b"2\r\nhi\r\n0\r\n\r\n",
        ),
        (
            "data holding CRLF and digits",
            b"5\r\n\r\n0\r\n\r\n0\r\n\r\n",
            b"5\r\n\r\n0\r\n\r\n0\r\n\r\n",
        ),
    ];
    for (name, input, want) in cases {
        let (out, n, done) = feed_all(input);
        assert_eq!(done, Ok(true), "{name}");
        assert_eq!(n, input.len(), "{name}");
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(want),
            "{name}"
        );
    }
}

#[test]
fn refused_bodies() {
    use ChunkError::{Malformed, TooLarge};
    let cases: &[(&str, &[u8], ChunkError)] = &[
        ("empty size", b"\r\n", Malformed("ChunkSize")),
        (
            "0x prefix",
            b"0x1\r\na\r\n0\r\n\r\n",
            Malformed("ChunkSize"),
        ),
        ("plus sign", b"+1\r\na\r\n0\r\n\r\n", Malformed("ChunkSize")),
        (
            "minus sign",
            b"-1\r\na\r\n0\r\n\r\n",
            Malformed("ChunkSize"),
        ),
        (
            "leading space",
            b" 1\r\na\r\n0\r\n\r\n",
            Malformed("ChunkSize"),
        ),
        (
            "trailing space",
            b"1 \r\na\r\n0\r\n\r\n",
            Malformed("ChunkSize"),
        ),
        (
            "trailing tab",
            b"1\t\r\na\r\n0\r\n\r\n",
            Malformed("ChunkSize"),
        ),
        (
            "space before extension",
            b"1 ;x\r\na\r\n0\r\n\r\n",
            Malformed("ChunkSize"),
        ),
        ("not hex", b"g\r\n", Malformed("ChunkSize")),
        ("underscore", b"1_0\r\n", Malformed("ChunkSize")),
        (
            "bare LF after size",
            b"1\na\r\n0\r\n\r\n",
            Malformed("BareLf"),
        ),
        (
            "bare LF in extension",
            b"1;x\na\r\n0\r\n\r\n",
            Malformed("BareLf"),
        ),
        ("CR without LF", b"1\rxa\r\n0\r\n\r\n", Malformed("BareCr")),
        (
            "control byte in extension",
            b"1;\x01\r\na\r\n0\r\n\r\n",
            Malformed("ChunkExtension"),
        ),
        (
            "NUL in extension",
            b"1;a\0\r\na\r\n0\r\n\r\n",
            Malformed("ChunkExtension"),
        ),
        (
            "data longer than size",
            b"1\r\nab\r\n0\r\n\r\n",
            Malformed("ChunkDataEnd"),
        ),
        (
            "data end bare LF",
            b"1\r\na\n0\r\n\r\n",
            Malformed("ChunkDataEnd"),
        ),
        (
            "data end CR only",
            b"1\r\na\r0\r\n\r\n",
            Malformed("ChunkDataEnd"),
        ),
        ("last chunk bare LF", b"0\n\n", Malformed("BareLf")),
        ("final line bare LF", b"0\r\n\n", Malformed("BareLf")),
        ("final CR without LF", b"0\r\n\rx", Malformed("BareCr")),
        (
            "trailer without colon",
            b"0\r\nX-Sum\r\n\r\n",
            Malformed("Trailer"),
        ),
        (
            "trailer with empty name",
            b"0\r\n: v\r\n\r\n",
            Malformed("Trailer"),
        ),
        (
            "trailer space before colon",
            b"0\r\nX-Sum : 1\r\n\r\n",
            Malformed("Trailer"),
        ),
        (
            "trailer obs-fold",
            b"0\r\nX-Sum: 1\r\n 2\r\n\r\n",
            Malformed("Trailer"),
        ),
        (
            "trailer bare LF",
            b"0\r\nX-Sum: 1\n\r\n",
            Malformed("BareLf"),
        ),
        (
            "trailer NUL",
            b"0\r\nX-Sum: \0\r\n\r\n",
            Malformed("Trailer"),
        ),
        (
            "trailer CR without LF",
            b"0\r\nX-Sum: 1\rX\r\n\r\n",
            Malformed("BareCr"),
        ),
        ("size 2^63", b"8000000000000000\r\n", TooLarge),
        ("size 2^64", b"10000000000000000\r\n", TooLarge),
        ("huge size", b"ffffffffffffffffffffffff\r\n", TooLarge),
    ];
    for (name, input, want) in cases {
        assert_eq!(refused(input), *want, "{name}");
    }
}

#[test]
fn largest_size_is_accepted() {
    let mut out = Vec::new();
    let mut dec = ChunkedDecoder::new();
    let line = b"7fffffffffffffff\r\nabc";
    assert_eq!(dec.feed(line, &mut out), Ok((line.len(), false)));
    assert_eq!(out, b"7fffffffffffffff\r\nabc");
}

#[test]
fn size_line_limit_is_4_kib() {
    let mut at_limit = b"1;".to_vec();
    at_limit.resize(MAX_SIZE_LINE, b'x');
    at_limit.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
    assert_eq!(feed_all(&at_limit).0, b"1\r\na\r\n0\r\n\r\n");
    let mut over = b"1;".to_vec();
    over.resize(MAX_SIZE_LINE + 1, b'x');
    assert_eq!(refused(&over), ChunkError::TooLarge);
    let zeros = vec![b'0'; MAX_SIZE_LINE + 1];
    assert_eq!(refused(&zeros), ChunkError::TooLarge);
}

#[test]
fn trailer_section_limit_is_16_kib() {
    let body = |section_len: usize| {
        // section = "X:" + value + "\r\n" + "\r\n"
        let mut b = b"0\r\nX:".to_vec();
        b.resize(3 + section_len - 4, b'v');
        b.extend_from_slice(b"\r\n\r\n");
        b
    };
    let ok = body(MAX_TRAILER_SECTION);
    assert_eq!(feed_all(&ok), (b"0\r\n\r\n".to_vec(), ok.len(), Ok(true)));
    assert_eq!(
        refused(&body(MAX_TRAILER_SECTION + 1)),
        ChunkError::TooLarge
    );
}

#[test]
fn errors_are_sticky() {
    let mut dec = ChunkedDecoder::new();
    let mut out = Vec::new();
    assert_eq!(
        dec.feed(b"z", &mut out),
        Err(ChunkError::Malformed("ChunkSize"))
    );
    assert_eq!(
        dec.feed(b"0\r\n\r\n", &mut out),
        Err(ChunkError::Malformed("ChunkSize"))
    );
    assert!(!dec.is_finished());
}

#[test]
fn data_only_writes_just_the_data() {
    let (out, n, done) = feed_split(ChunkedDecoder::data_only(), MULTI, &[7, 20]);
    assert_eq!(out, b"hello 0123456789");
    assert_eq!((n, done), (MULTI.len(), Ok(true)));
}

#[test]
fn incomplete_body_waits_for_more() {
    for cut in 0..MULTI.len() {
        let (_, n, done) = feed_all(&MULTI[..cut]);
        assert_eq!((n, done), (cut, Ok(false)), "prefix of {cut} bytes");
    }
}

#[test]
fn output_goes_to_a_reused_buffer() {
    let mut dec = ChunkedDecoder::new();
    let mut out = Vec::with_capacity(64);
    let cap = out.capacity();
    for piece in MULTI.chunks(9) {
        out.clear();
        dec.feed(piece, &mut out).unwrap();
    }
    assert!(dec.is_finished());
    assert_eq!(out.capacity(), cap);
}

/// A body encoded with some non-canonical but valid spellings.
fn encode(chunks: &[Vec<u8>], pad: usize, upper: bool, ext: bool, trailers: bool) -> Vec<u8> {
    let mut b = Vec::new();
    for c in chunks.iter().filter(|c| !c.is_empty()) {
        b.extend(std::iter::repeat_n(b'0', pad));
        let size = if upper {
            format!("{:X}", c.len())
        } else {
            format!("{:x}", c.len())
        };
        b.extend_from_slice(size.as_bytes());
        if ext {
            b.extend_from_slice(b";e=\"1\"");
        }
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(c);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(b"0\r\n");
    if trailers {
        b.extend_from_slice(b"Digest: x\r\n");
    }
    b.extend_from_slice(b"\r\n");
    b
}

fn sorted_cuts(len: usize, raw: Vec<usize>) -> Vec<usize> {
    let mut cuts: Vec<usize> = raw.into_iter().map(|c| c % (len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (_, n, _) = feed_all(&input);
        prop_assert!(n <= input.len());
    }

    #[test]
    fn near_valid_bytes_never_panic(pieces in proptest::collection::vec(
        prop_oneof![
            Just(&b"\r\n"[..]), Just(&b"\n"[..]), Just(&b"\r"[..]), Just(&b"0"[..]),
            Just(&b"1"[..]), Just(&b"a"[..]), Just(&b";x"[..]), Just(&b"X:"[..]), Just(&b" "[..]),
        ], 0..64)) {
        let input = pieces.concat();
        let whole = feed_all(&input);
        let cuts: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(feed_split(ChunkedDecoder::new(), &input, &cuts), whole);
    }

    #[test]
    fn any_split_gives_the_same_outcome(
        input in proptest::collection::vec(any::<u8>(), 0..256),
        raw in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let cuts = sorted_cuts(input.len(), raw);
        prop_assert_eq!(feed_split(ChunkedDecoder::new(), &input, &cuts), feed_all(&input));
    }

    #[test]
    fn valid_bodies_roundtrip_under_any_split(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6),
        pad in 0usize..3, upper: bool, ext: bool, trailers: bool,
        raw in proptest::collection::vec(any::<usize>(), 0..8),
        suffix in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let body = encode(&chunks, pad, upper, ext, trailers);
        let mut input = body.clone();
        input.extend_from_slice(&suffix);
        let cuts = sorted_cuts(input.len(), raw);
        let (out, n, done) = feed_split(ChunkedDecoder::new(), &input, &cuts);
        prop_assert_eq!(done, Ok(true));
        prop_assert_eq!(n, body.len());
        // The output is the canonical encoding, a fixed point of the decoder.
        prop_assert_eq!(&out, &encode(&chunks, 0, false, false, false));
        prop_assert_eq!(feed_all(&out), (out.clone(), out.len(), Ok(true)));
        let (data, _, _) = feed_split(ChunkedDecoder::data_only(), &input, &cuts);
        prop_assert_eq!(data, chunks.concat());
    }
}
