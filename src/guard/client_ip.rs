//! Who the client is (spec decision 10): the socket peer's address without the port,
//! unless the peer is a trusted proxy; then the right-most address of the forwarded
//! chain that is not itself a trusted proxy.
//!
//! Walking from the right matters: every proxy appends what it saw, so entries left of
//! the first untrusted hop were written by the client and prove nothing.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::{HeaderMap, HeaderName, header};
use ipnet::IpNet;

use super::config::ForwardedHeader;

/// `X-Forwarded-For` (not in `http::header`).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The proxy networks whose forwarded header is believed, and which header that is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

// === impl TrustedProxies ===

impl TrustedProxies {
    /// Trusts peers inside `nets`, reading `header` from them.
    pub fn new(nets: Vec<IpNet>, header: ForwardedHeader) -> Self {
        Self { nets, header }
    }

    /// Whether `ip` lies in a trusted proxy network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` carrying `headers`.
    ///
    /// An unparsable hop (garbage, `unknown`, an obfuscated identifier) ends the walk:
    /// the nearest trusted proxy could not say who sent the request, so the last
    /// address known for sure (that proxy, or the peer) stands for the client. When
    /// every hop is trusted, the left-most one is the client.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.nets.is_empty() || !self.contains(peer) {
            return peer;
        }
        let hops = match self.header {
            ForwardedHeader::XForwardedFor => x_forwarded_for(headers),
            ForwardedHeader::Forwarded => forwarded(headers),
        };
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            let Some(ip) = hop else {
                return client;
            };
            client = ip.to_canonical();
            if !self.contains(client) {
                return client;
            }
        }
        client
    }
}

/// The hops of every `X-Forwarded-For` line, left to right; `None` for an entry that is
/// not an address.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        let Ok(text) = value.to_str() else {
            hops.push(None);
            continue;
        };
        hops.extend(text.split(',').map(|entry| parse_node(entry.trim())));
    }
    hops
}

/// The `for=` nodes of every `Forwarded` element (RFC 7239 §4), left to right; `None`
/// for an element without a usable `for=`.
fn forwarded(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(header::FORWARDED) {
        let Ok(text) = value.to_str() else {
            hops.push(None);
            continue;
        };
        for element in split_unquoted(text, ',') {
            let node = split_unquoted(element, ';').into_iter().find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| unquote(value.trim()))
            });
            hops.push(node.and_then(|node| parse_node(&node)));
        }
    }
    hops
}

/// Splits `text` at `separator` outside double-quoted strings.
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..at]);
                start = at + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The content of a quoted-string (RFC 9110 §5.6.4), or a token as it is.
fn unquote(value: &str) -> String {
    let Some(inner) = value
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// An address with an optional port: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`. RFC 7239 also allows obfuscated ports
/// (`:_abc`). Anything else (`unknown`, `_hidden`, garbage) is `None`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = inside.parse().ok()?;
        return (after.is_empty() || after.strip_prefix(':').is_some_and(valid_port))
            .then_some(IpAddr::V6(ip));
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    // Only IPv4 may carry a port without brackets; a bare IPv6 parsed above.
    let (host, port) = node.rsplit_once(':')?;
    let ip: std::net::Ipv4Addr = host.parse().ok()?;
    valid_port(port).then_some(IpAddr::V4(ip))
}

fn valid_port(port: &str) -> bool {
    port.parse::<u16>().is_ok()
        || port.strip_prefix('_').is_some_and(|obf| {
            !obf.is_empty()
                && obf
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn trusted(nets: &[&str], header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies::new(
            nets.iter().map(|n| n.parse().expect("test net")).collect(),
            header,
        )
    }

    fn headers(name: &HeaderName, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                name.clone(),
                HeaderValue::from_str(value).expect("test header"),
            );
        }
        map
    }

    fn xff(values: &[&str]) -> HeaderMap {
        headers(&X_FORWARDED_FOR, values)
    }

    fn fwd(values: &[&str]) -> HeaderMap {
        headers(&header::FORWARDED, values)
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_forwards() {
        let proxies = trusted(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let peer = ip("203.0.113.9");
        assert_eq!(proxies.client_ip(peer, &xff(&["198.51.100.1"])), peer);
        assert_eq!(proxies.client_ip(peer, &fwd(&["for=198.51.100.1"])), peer);
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(peer, &xff(&["198.51.100.1"])), peer);
        assert_eq!(
            none.client_ip(ip("10.0.0.1"), &xff(&["198.51.100.1"])),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn x_forwarded_for_from_a_trusted_peer() {
        let proxies = trusted(
            &["10.0.0.0/8", "127.0.0.1/32"],
            ForwardedHeader::XForwardedFor,
        );
        let peer = ip("10.1.2.3");
        let cases: &[(&[&str], &str)] = &[
            // No header: the proxy itself.
            (&[], "10.1.2.3"),
            (&["198.51.100.7"], "198.51.100.7"),
            // The client's own forged entries sit left of the real one.
            (&["1.1.1.1, 198.51.100.7"], "198.51.100.7"),
            // Trusted hops on the right are skipped.
            (&["198.51.100.7, 10.9.9.9, 127.0.0.1"], "198.51.100.7"),
            // Several header lines form one list, in order.
            (&["1.1.1.1", "198.51.100.7, 10.9.9.9"], "198.51.100.7"),
            // Ports and brackets.
            (&["198.51.100.7:4711"], "198.51.100.7"),
            (&["[2001:db8::7]:443"], "2001:db8::7"),
            (&["2001:db8::7"], "2001:db8::7"),
            (&["[2001:db8::7]"], "2001:db8::7"),
            // IPv4-mapped IPv6 is the IPv4 client.
            (&["::ffff:198.51.100.7"], "198.51.100.7"),
            // Whitespace and empty members.
            (&["  198.51.100.7  "], "198.51.100.7"),
            // Garbage right of a trusted hop: the trusted hop stands for the client.
            (&["198.51.100.7, garbage, 10.9.9.9"], "10.9.9.9"),
            // Garbage as the right-most entry: the peer.
            (&["198.51.100.7, unknown"], "10.1.2.3"),
            (&["198.51.100.7,"], "10.1.2.3"),
            (&["198.51.100.7:99999"], "10.1.2.3"),
            (&["[2001:db8::7"], "10.1.2.3"),
            // Every hop trusted: the left-most one.
            (&["10.5.5.5, 10.6.6.6"], "10.5.5.5"),
        ];
        for (values, expected) in cases {
            assert_eq!(
                proxies.client_ip(peer, &xff(values)),
                ip(expected),
                "{values:?}"
            );
        }
    }

    #[test]
    fn forwarded_from_a_trusted_peer() {
        let proxies = trusted(&["10.0.0.0/8", "::1/128"], ForwardedHeader::Forwarded);
        let peer = ip("10.1.2.3");
        let cases: &[(&[&str], &str)] = &[
            (&["for=198.51.100.7"], "198.51.100.7"),
            (
                &["For=198.51.100.7;proto=https;by=10.0.0.1"],
                "198.51.100.7",
            ),
            (&["proto=https; for=198.51.100.7"], "198.51.100.7"),
            (&["for=\"198.51.100.7:4711\""], "198.51.100.7"),
            (&["for=\"[2001:db8:cafe::17]:4711\""], "2001:db8:cafe::17"),
            (&["for=\"[2001:db8:cafe::17]\""], "2001:db8:cafe::17"),
            (&["for=1.1.1.1, for=198.51.100.7"], "198.51.100.7"),
            (&["for=198.51.100.7, for=10.9.9.9"], "198.51.100.7"),
            (&["for=1.1.1.1", "for=198.51.100.7;by=x"], "198.51.100.7"),
            (&["for=\"[::1]\", for=10.9.9.9"], "::1"),
            // A quoted comma does not split elements.
            (&["for=198.51.100.7;ext=\"a,b\""], "198.51.100.7"),
            // Obfuscated port is fine, obfuscated node is unknown.
            (&["for=\"198.51.100.7:_p1\""], "198.51.100.7"),
            (&["for=198.51.100.7, for=_hidden"], "10.1.2.3"),
            (&["for=198.51.100.7, for=unknown, for=10.9.9.9"], "10.9.9.9"),
            // An element without for= says nothing about the sender.
            (&["for=198.51.100.7, proto=http"], "10.1.2.3"),
            (&["garbage"], "10.1.2.3"),
            (&["for=\"[2001:db8::1]:x\""], "10.1.2.3"),
            (&["for="], "10.1.2.3"),
        ];
        for (values, expected) in cases {
            assert_eq!(
                proxies.client_ip(peer, &fwd(values)),
                ip(expected),
                "{values:?}"
            );
        }
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let xff_proxies = trusted(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let fwd_proxies = trusted(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let peer = ip("10.1.2.3");
        let mut both = xff(&["198.51.100.1"]);
        both.append(
            header::FORWARDED,
            HeaderValue::from_static("for=198.51.100.2"),
        );
        assert_eq!(xff_proxies.client_ip(peer, &both), ip("198.51.100.1"));
        assert_eq!(fwd_proxies.client_ip(peer, &both), ip("198.51.100.2"));
    }

    #[test]
    fn ipv4_mapped_peer_is_matched_as_ipv4() {
        let proxies = trusted(&["127.0.0.1/32"], ForwardedHeader::XForwardedFor);
        let mapped = ip("::ffff:127.0.0.1");
        assert!(proxies.contains(mapped));
        assert_eq!(
            proxies.client_ip(mapped, &xff(&["198.51.100.1"])),
            ip("198.51.100.1")
        );
        assert_eq!(
            TrustedProxies::default().client_ip(mapped, &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn non_ascii_header_is_garbage() {
        let proxies = trusted(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let mut map = HeaderMap::new();
        map.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"198.51.100.1\xff").expect("opaque header"),
        );
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), &map), ip("10.0.0.1"));
    }
}
