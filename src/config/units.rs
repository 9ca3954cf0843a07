//! Durations and sizes as the config writes them: a number with a unit, never bare.
//!
//! Durations: `500ms`, `30s`, `5m`, `1h`, `1d` (a decimal fraction such as `1.5s` is
//! allowed; the result is rounded to whole milliseconds). Sizes: `512B`, `16KiB`,
//! `1MiB`, `1GiB` (also the decimal `KB`, `MB`, `GB`).

use std::time::Duration;

const DURATION_UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
];

/// Splits `"12.5ms"` into `("12.5", "ms")`.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// Multiplies a decimal number text by a unit, exactly, in integer arithmetic.
fn scaled(number: &str, unit: u64) -> Option<u64> {
    let (int, frac) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut total = whole.checked_mul(unit)?;
    // Fraction: at most 9 digits matter for any unit here.
    let mut scale = unit;
    for d in frac.bytes().take(12) {
        let digit = u64::from(d - b'0');
        total = total.checked_add(digit.checked_mul(scale)? / 10)?;
        scale /= 10;
        if scale == 0 {
            break;
        }
    }
    Some(total)
}

/// Parses a duration string. The error says what was expected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(
            "expected a duration such as \"30s\" (units: ms, s, m, h, d), got an empty string"
                .into(),
        );
    }
    let (num, unit) = split_number(t);
    if unit.is_empty() {
        return Err(format!(
            "a bare number ({t}) is not a duration: add a unit, such as \"{t}s\" (units: ms, s, m, h, d)"
        ));
    }
    let Some(&(_, ms)) = DURATION_UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!(
            "expected a duration such as \"30s\" (units: ms, s, m, h, d), got \"{s}\""
        ));
    };
    match scaled(num, ms) {
        Some(v) => Ok(Duration::from_millis(v)),
        None => Err(format!(
            "expected a duration such as \"30s\" (units: ms, s, m, h, d), got \"{s}\""
        )),
    }
}

/// Parses a size string into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = split_number(t);
    if !num.is_empty() && unit.is_empty() {
        return Err(format!(
            "a bare number ({t}) is not a size: add a unit, such as \"{t}KiB\" (units: B, KiB, MiB, GiB, KB, MB, GB)"
        ));
    }
    let expected = || {
        format!(
            "expected a size such as \"16KiB\" (units: B, KiB, MiB, GiB, KB, MB, GB), got \"{s}\""
        )
    };
    let Some(&(_, mult)) = SIZE_UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(expected());
    };
    scaled(num, mult).ok_or_else(expected)
}

/// Formats a duration the way the config writes it (`1d`, `5m`, `30s`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    for (unit, size) in DURATION_UNITS.iter().rev() {
        let size = u128::from(*size);
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 2m "), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn bare_numbers_are_rejected_with_a_hint() {
        let e = parse_duration("30").unwrap_err();
        assert!(e.contains("bare number"), "{e}");
        assert!(e.contains("\"30s\""), "{e}");
        let e = parse_size("16").unwrap_err();
        assert!(e.contains("bare number"), "{e}");
    }

    #[test]
    fn bad_durations() {
        for bad in [
            "",
            "s",
            "10x",
            "1.2.3s",
            "-1s",
            "1 h h",
            "ms5",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("1KB"), Ok(1000));
        assert_eq!(parse_size("0.5KiB"), Ok(512));
        assert!(parse_size("1kib").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn format_round_trips() {
        for s in ["500ms", "30s", "5m", "1h", "1d", "90s", "1500ms"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(86400)), "1d");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
