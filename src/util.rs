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
