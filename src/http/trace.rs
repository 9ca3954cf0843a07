//! `X-Amzn-Trace-Id` in ALB's format (aws-reference §5.3): `Root=1-<8 hex epoch
//! seconds>-<24 hex>` added when absent (or when the header has no `Root`, keeping
//! the application's fields); a `Self=` field inserted before an existing `Root`
//! (or updated when present).

/// A new trace id segment `1-xxxxxxxx-yyyyyyyyyyyyyyyyyyyyyyyy`.
fn segment(now_unix: u64, out: &mut String) {
    let mut seg = *b"1-xxxxxxxx-yyyyyyyyyyyyyyyyyyyyyyyy";
    hex_into(&mut seg[2..10], u64::from(now_unix as u32));
    hex_into(&mut seg[11..19], u64::from(fastrand::u32(..)));
    hex_into(&mut seg[19..35], fastrand::u64(..));
    // Only ASCII hex digits and '-' were written.
    out.push_str(std::str::from_utf8(&seg).unwrap_or_default());
}

/// Writes the low `dst.len()` hex digits of `v` into `dst`, lower case, zero-padded.
fn hex_into(dst: &mut [u8], v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = dst.len();
    for (i, d) in dst.iter_mut().enumerate() {
        *d = HEX[((v >> ((n - 1 - i) * 4)) & 0xf) as usize];
    }
}

/// The trace id to send upstream, given the client's (if any).
#[cfg(test)]
pub fn value(client: Option<&str>, now_unix: u64) -> String {
    let mut out = String::new();
    write(client, now_unix, &mut out);
    out
}

/// The trace id to send upstream into `out` (cleared first), a buffer reused from
/// request to request.
pub fn write(client: Option<&str>, now_unix: u64, out: &mut String) {
    out.clear();
    match client
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.len() <= 7 * 1024)
    {
        Some(c) if c.contains("Root=") => {
            // Drop an old Self and put ours first.
            out.push_str("Self=");
            segment(now_unix, out);
            for field in c
                .split(';')
                .map(str::trim)
                .filter(|f| !f.is_empty() && !f.starts_with("Self="))
            {
                out.push(';');
                out.push_str(field);
            }
        }
        Some(c) => {
            // No Root: a new one first; the application's fields are kept (an old
            // Self, naming no trace, is dropped).
            out.push_str("Root=");
            segment(now_unix, out);
            for field in c
                .split(';')
                .map(str::trim)
                .filter(|f| !f.is_empty() && !f.starts_with("Self=") && f.contains('='))
            {
                out.push(';');
                out.push_str(field);
            }
        }
        None => {
            out.push_str("Root=");
            segment(now_unix, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_segment(s: &str) -> bool {
        let p: Vec<&str> = s.split('-').collect();
        p.len() == 3
            && p[0] == "1"
            && p[1].len() == 8
            && p[2].len() == 24
            && p[1..].iter().all(|x| {
                x.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            })
    }

    #[test]
    fn new_root_when_absent() {
        let v = value(None, 0x6789_1233);
        let seg = v.strip_prefix("Root=").unwrap();
        assert!(is_segment(seg), "{v}");
        assert!(seg.starts_with("1-67891233-"));
        assert!(value(Some("  "), 1).starts_with("Root=1-"));
    }

    #[test]
    fn without_root_a_new_root_keeps_the_application_fields() {
        let v = value(
            Some("Sampled=1;Self=1-00000001-000000000000000000000001;junk"),
            1,
        );
        let (first, rest) = v.split_once(';').unwrap();
        assert!(is_segment(first.strip_prefix("Root=").unwrap()), "{v}");
        assert_eq!(rest, "Sampled=1", "{v}");
    }

    #[test]
    fn self_inserted_before_an_existing_root() {
        let v = value(Some("Root=1-67891233-abcdef012345678912345678;App=x"), 1);
        let (first, rest) = v.split_once(';').unwrap();
        assert!(is_segment(first.strip_prefix("Self=").unwrap()), "{v}");
        assert_eq!(rest, "Root=1-67891233-abcdef012345678912345678;App=x");
        let again = value(Some(&v), 2);
        assert_eq!(again.matches("Self=").count(), 1, "{again}");
        assert!(again.ends_with(";Root=1-67891233-abcdef012345678912345678;App=x"));
    }
}
