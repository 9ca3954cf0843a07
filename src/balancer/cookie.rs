//! Signed sticky cookies (SPEC §4): `FULCRUMLB`, `FULCRUMLBAPP` and
//! `FULCRUMLBTG` carry an opaque id (never an address), an expiry and an
//! HMAC-SHA256 over both and the cookie's name, keyed with the node secret, so a
//! client can neither forge a choice nor move a cookie to another purpose. Nodes
//! sharing `node.secret_file` accept each other's cookies.

use aws_lc_rs::{digest, hmac, rand};

/// The group-stickiness cookie of weighted forwards.
pub const GROUP_COOKIE: &str = "FULCRUMLBTG";
/// The balancer's own target-stickiness cookie (`lb_cookie`).
pub const LB_COOKIE: &str = "FULCRUMLB";
/// The cookie that follows an application cookie (`app_cookie`).
pub const APP_COOKIE: &str = "FULCRUMLBAPP";

/// Hex characters of a cookie value: id (16) + expiry (16) + MAC (32).
const VALUE_LEN: usize = 64;

pub struct CookieKey {
    key: hmac::Key,
}

impl CookieKey {
    /// A key from the node secret's bytes.
    pub fn new(secret: &[u8]) -> CookieKey {
        CookieKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A random key, for a node without `secret_file` (cookies then hold only
    /// until the process restarts).
    pub fn random() -> CookieKey {
        let mut bytes = [0u8; 32];
        if rand::fill(&mut bytes).is_err() {
            // The system RNG failing is not recoverable in any useful way; fall
            // back to something unpredictable enough for stickiness.
            bytes[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
            bytes[8..16].copy_from_slice(&fastrand::u64(..).to_le_bytes());
        }
        CookieKey::new(&bytes)
    }

    fn mac(&self, name: &str, id: u64, expires: u64) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(name.as_bytes());
        ctx.update(&[0]);
        ctx.update(&id.to_be_bytes());
        ctx.update(&expires.to_be_bytes());
        ctx.sign()
    }

    /// The cookie value for `id`, valid until `expires` (Unix seconds).
    pub fn sign(&self, name: &str, id: u64, expires: u64) -> String {
        let tag = self.mac(name, id, expires);
        let mut out = String::with_capacity(VALUE_LEN);
        out.push_str(&format!("{id:016x}{expires:016x}"));
        for b in &tag.as_ref()[..16] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The id a cookie value carries, if its MAC holds and it has not expired.
    pub fn verify(&self, name: &str, value: &str, now: u64) -> Option<u64> {
        let v = value.trim_matches('"');
        if v.len() != VALUE_LEN || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let id = u64::from_str_radix(&v[..16], 16).ok()?;
        let expires = u64::from_str_radix(&v[16..32], 16).ok()?;
        if expires <= now {
            return None;
        }
        let mut given = [0u8; 16];
        for (i, b) in given.iter_mut().enumerate() {
            *b = u8::from_str_radix(&v[32 + 2 * i..34 + 2 * i], 16).ok()?;
        }
        let want = self.mac(name, id, expires);
        // Constant-time comparison of the truncated tags.
        let diff = want.as_ref()[..16]
            .iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then_some(id)
    }
}

/// A stable opaque id for a name (a group, or a group and a target address):
/// the same on every node, and not the address itself.
pub fn opaque_id(parts: &[&str]) -> u64 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p.as_bytes());
        ctx.update(&[0]);
    }
    let d = ctx.finish();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(b)
}

/// The value of cookie `name` in a `Cookie` header value, if present.
pub fn find<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim())
    })
}

/// A `Set-Cookie` header line (without CRLF) for a sticky cookie.
pub fn set_cookie_line(name: &str, value: &str, expires_unix: u64, secure: bool) -> String {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires_unix);
    format!(
        "Set-Cookie: {name}={value}; Expires={}; Path=/; HttpOnly{}",
        httpdate::fmt_http_date(when),
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_values_round_trip_and_resist_tampering() {
        let k = CookieKey::new(b"node secret");
        let v = k.sign(GROUP_COOKIE, 42, 2_000);
        assert_eq!(v.len(), VALUE_LEN);
        assert_eq!(k.verify(GROUP_COOKIE, &v, 1_000), Some(42));
        // expired
        assert_eq!(k.verify(GROUP_COOKIE, &v, 2_000), None);
        // another cookie's purpose
        assert_eq!(k.verify(LB_COOKIE, &v, 1_000), None);
        // another node secret
        assert_eq!(
            CookieKey::new(b"other").verify(GROUP_COOKIE, &v, 1_000),
            None
        );
        // a forged id
        let mut forged = v.clone();
        forged.replace_range(15..16, if &v[15..16] == "0" { "1" } else { "0" });
        assert_eq!(k.verify(GROUP_COOKIE, &forged, 1_000), None);
        // garbage
        for bad in ["", "zz", &"g".repeat(64), &v[..63]] {
            assert_eq!(k.verify(GROUP_COOKIE, bad, 1_000), None);
        }
        // a random key still signs and verifies
        let r = CookieKey::random();
        assert_eq!(r.verify(LB_COOKIE, &r.sign(LB_COOKIE, 7, 10), 9), Some(7));
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(
            opaque_id(&["web", "10.0.0.1:80"]),
            opaque_id(&["web", "10.0.0.1:80"])
        );
        assert_ne!(
            opaque_id(&["web", "10.0.0.1:80"]),
            opaque_id(&["web", "10.0.0.2:80"])
        );
        assert_ne!(opaque_id(&["ab", "c"]), opaque_id(&["a", "bc"]));
    }

    #[test]
    fn cookie_headers() {
        assert_eq!(find("a=1; FULCRUMLBTG=abc; b=2", GROUP_COOKIE), Some("abc"));
        assert_eq!(find("FULCRUMLBTGX=1", GROUP_COOKIE), None);
        let line = set_cookie_line(GROUP_COOKIE, "v", 0, true);
        assert_eq!(
            line,
            "Set-Cookie: FULCRUMLBTG=v; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; HttpOnly; Secure"
        );
    }
}
