//! Small helpers without a better home: RFC 3339 time stamps, size-capped file reads.

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-11-24T16:40:00Z` (UTC, whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Reads a whole file of at most `max` bytes; a larger one (or an endless one such
/// as `/dev/zero`) is an `InvalidData` error instead of exhausting memory.
pub fn read_capped(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// Secrets, tokens and keys named by the config are small.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;
/// PEM bundles (CA files).
pub const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;
/// The config file itself.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

#[cfg(test)]
mod tests {
    #[test]
    fn read_capped_refuses_endless_and_large_files() {
        let e = super::read_capped(std::path::Path::new("/dev/zero"), 1024).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        let dir = std::env::temp_dir().join(format!("fulcrum-capped-{}", std::process::id()));
        std::fs::write(&dir, b"0123456789").unwrap();
        assert_eq!(super::read_capped(&dir, 10).unwrap(), b"0123456789");
        assert!(super::read_capped(&dir, 9).is_err());
        let _ = std::fs::remove_file(&dir);
    }

    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_538_400)),
            "2026-11-24T16:40:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}

thread_local! {
    /// (monotonic instant, wall clock in ms since the epoch at that instant).
    static WALL_ANCHOR: std::cell::Cell<Option<(std::time::Instant, u64)>> =
        const { std::cell::Cell::new(None) };
}

/// `s` without leading and trailing ASCII whitespace (tokens and secrets: Unicode
/// spaces are not whitespace there).
pub fn trim_ascii(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii_whitespace())
}

/// Wall-clock milliseconds since the Unix epoch at monotonic instant `at`,
/// without a clock read: derived from a per-thread anchor that is renewed once
/// `at` is a second past it (so a stepped system clock shows within a second).
/// `at` is a time the caller already read (a request's start).
pub fn unix_ms_at(at: std::time::Instant) -> u64 {
    WALL_ANCHOR.with(|a| {
        if let Some((t, ms)) = a.get() {
            if let Some(d) = at.checked_duration_since(t) {
                if d < std::time::Duration::from_secs(1) {
                    return ms + d.as_millis() as u64;
                }
            }
        }
        let now = std::time::Instant::now();
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        a.set(Some((now, ms)));
        // `at` is at most a little before `now` (it was read earlier).
        ms.saturating_sub(now.saturating_duration_since(at).as_millis() as u64)
    })
}

#[cfg(test)]
mod wall_tests {
    use super::*;

    #[test]
    fn unix_ms_at_follows_the_wall_clock() {
        let wall = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        let before = wall();
        let t = std::time::Instant::now();
        let first = unix_ms_at(t);
        // An instant 200 ms later is answered from the anchor.
        let later = unix_ms_at(t + std::time::Duration::from_millis(200));
        let after = wall();
        assert!(
            first + 2 >= before && first <= after + 2,
            "{before} {first} {after}"
        );
        assert!(
            later >= first + 199 && later <= first + 201,
            "{first} {later}"
        );
        // An instant earlier than the anchor re-anchors and still answers.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let t2 = std::time::Instant::now();
        let again = unix_ms_at(t2);
        assert!(
            again >= first + 19 && again <= wall() + 2,
            "{first} {again}"
        );
        assert!(
            unix_ms_at(t) + 15 <= again,
            "an earlier instant maps earlier"
        );
    }
}
