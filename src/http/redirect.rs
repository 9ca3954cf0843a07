//! Redirect `Location` building (SPEC §3): placeholders `#{protocol}`, `#{host}`,
//! `#{port}`, `#{path}` (without its leading slash) and `#{query}`; a protocol
//! change without a port in the config moves to the new scheme's default port (a
//! `port: "#{port}"` given explicitly keeps the request's); default ports are left
//! out; an empty query gives no `?`.

use crate::snapshot::{Redirect, RedirectProtocol};

fn expand(template: &str, proto: &str, host: &str, port: &str, path: &str, query: &str) -> String {
    if !template.contains("#{") {
        return template.to_owned();
    }
    template
        .replace("#{protocol}", proto)
        .replace("#{host}", host)
        .replace("#{port}", port)
        .replace("#{path}", path.strip_prefix('/').unwrap_or(path))
        .replace("#{query}", query)
}

/// The Location for a request `proto://host:port{path}?{query}` (port: the
/// listener port the client connected to).
pub fn location(
    r: &Redirect,
    proto: &str,
    host: &str,
    port: u16,
    path: &str,
    query: &str,
) -> String {
    let new_proto = match r.protocol {
        RedirectProtocol::Keep => proto,
        RedirectProtocol::Http => "http",
        RedirectProtocol::Https => "https",
    };
    let port_s = port.to_string();
    let new_port = if !r.port_given && new_proto != proto {
        if new_proto == "https" {
            "443".to_owned()
        } else {
            "80".to_owned()
        }
    } else {
        expand(&r.port, proto, host, &port_s, path, query)
    };
    let new_host = expand(&r.host, proto, host, &port_s, path, query);
    let new_path = expand(&r.path, proto, host, &port_s, path, query);
    let new_query = expand(&r.query, proto, host, &port_s, path, query);
    let default =
        (new_proto == "http" && new_port == "80") || (new_proto == "https" && new_port == "443");
    // An IPv6 literal (the request's Host, `#{host}`, is kept without brackets
    // for the rules) goes back into brackets.
    let mut out = if new_host.contains(':') && !new_host.starts_with('[') {
        format!("{new_proto}://[{new_host}]")
    } else {
        format!("{new_proto}://{new_host}")
    };
    if !default {
        out.push(':');
        out.push_str(&new_port);
    }
    out.push_str(&new_path);
    if !new_query.is_empty() {
        out.push('?');
        out.push_str(&new_query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(protocol: RedirectProtocol, host: &str, port: &str, path: &str, query: &str) -> Redirect {
        Redirect {
            protocol,
            host: host.into(),
            port: port.into(),
            // The templates' default `#{port}` stands for "not given".
            port_given: port != "#{port}",
            path: path.into(),
            query: query.into(),
            status: 301,
        }
    }

    #[test]
    fn http_to_https_moves_to_the_default_port() {
        let x = r(
            RedirectProtocol::Https,
            "#{host}",
            "#{port}",
            "/#{path}",
            "#{query}",
        );
        assert_eq!(
            location(&x, "http", "example.com", 80, "/a/b", "x=1"),
            "https://example.com/a/b?x=1"
        );
        assert_eq!(
            location(&x, "http", "example.com", 8080, "/", ""),
            "https://example.com/"
        );
        // `port: "#{port}"` given explicitly keeps the request's port.
        let kept = Redirect {
            port_given: true,
            ..x
        };
        assert_eq!(
            location(&kept, "http", "example.com", 8080, "/a", ""),
            "https://example.com:8080/a"
        );
    }

    #[test]
    fn explicit_ports_and_templates() {
        let x = r(
            RedirectProtocol::Keep,
            "new.#{host}",
            "8443",
            "/new/#{path}",
            "#{query}&from=#{port}",
        );
        assert_eq!(
            location(&x, "http", "example.com", 80, "/old/x", "a=1"),
            "http://new.example.com:8443/new/old/x?a=1&from=80"
        );
        let y = r(RedirectProtocol::Keep, "#{host}", "#{port}", "/moved", "");
        assert_eq!(
            location(&y, "http", "h", 8000, "/x", "q=1"),
            "http://h:8000/moved"
        );
    }

    #[test]
    fn an_ipv6_host_goes_back_into_brackets() {
        let x = r(
            RedirectProtocol::Https,
            "#{host}",
            "#{port}",
            "/#{path}",
            "",
        );
        assert_eq!(
            location(&x, "http", "::1", 8080, "/a", ""),
            "https://[::1]/a"
        );
    }
}
