//! Who sent a request: the client IP (forwarding headers honoured only from trusted proxies),
//! the User-Agent and a CDN country header (also only from trusted proxies).
//!
//! The forwarding headers are parsed here rather than with a crate: the one crate for RFC 7239
//! (`forwarded-header-value` 0.1) refuses a whole header for one entry it cannot read (an
//! `ip:port` in X-Forwarded-For, a quoted `;`), which would let one garbage entry written by
//! a client blank the hops our own proxies appended after it.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::{HeaderMap, HeaderValue};
use ipnet::IpNet;

/// Which header the trusted proxies write the client address into.
///
/// Only one is read: a proxy appends to the header it writes and passes the others through
/// as the client sent them, so reading a second header would let a client choose its address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardingHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, Envoy, every cloud load
    /// balancer and CDN). Entries may carry a port, brackets or quotes.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for="[2001:db8::1]:4711"`.
    Forwarded,
    /// `X-Real-IP: client`: one address that the nearest proxy sets (nginx's
    /// `proxy_set_header X-Real-IP $remote_addr`). Only right when that proxy always
    /// overwrites it; a proxy that does not passes the client's own value through, and it
    /// cannot carry a chain of proxies. Never read unless chosen.
    XRealIp,
}

impl ForwardingHeader {
    pub fn name(self) -> &'static str {
        match self {
            ForwardingHeader::XForwardedFor => "x-forwarded-for",
            ForwardingHeader::Forwarded => "forwarded",
            ForwardingHeader::XRealIp => "x-real-ip",
        }
    }
}

impl FromStr for ForwardingHeader {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardingHeader::XForwardedFor),
            "forwarded" => Ok(ForwardingHeader::Forwarded),
            "x-real-ip" => Ok(ForwardingHeader::XRealIp),
            other => Err(format!(
                "unknown forwarding header {other:?}; expected x-forwarded-for, forwarded or x-real-ip"
            )),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ClientConfig {
    /// Proxies whose forwarding and country headers we believe (load balancers, CDNs).
    pub trusted_proxies: Vec<IpNet>,
    /// The header those proxies write the client address into.
    pub forwarding_header: ForwardingHeader,
    /// A header set by a trusted CDN with the visitor's country (e.g. CF-IPCountry).
    pub country_header: Option<String>,
}

/// One hop of a forwarding chain as a proxy wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hop {
    Addr(IpAddr),
    /// `unknown`, an RFC 7239 obfuscated identifier (`_hidden`), a `Forwarded` element
    /// without `for=`, or text that is no address: the proxy could not or would not say.
    Unknown,
}

impl ClientConfig {
    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    fn peer_is_trusted(&self, peer: Option<SocketAddr>) -> bool {
        peer.is_some_and(|p| self.trusted(p.ip().to_canonical()))
    }

    /// The client address: the peer, or, when the peer is a trusted proxy, the right-most
    /// hop of the forwarding header that is not itself a trusted proxy (hops left of it were
    /// written by whoever connected to our proxies, so they prove nothing). Several lines of
    /// the header are one list, in order. A hop a proxy wrote as `unknown` or obfuscated is
    /// no address: the answer is then the nearest trusted hop, the last address known. IPv4
    /// addresses mapped into IPv6 (`::ffff:192.0.2.1`, a dual-stack listener) count as IPv4.
    pub fn client_ip(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer_ip = peer?.ip().to_canonical();
        if !self.trusted(peer_ip) {
            return Some(peer_ip);
        }
        let mut values = headers.get_all(self.forwarding_header.name()).iter().map(header_text);
        let hops: Vec<Hop> = match self.forwarding_header {
            ForwardingHeader::XForwardedFor => values.flat_map(|v| x_forwarded_for(&v)).collect(),
            ForwardingHeader::Forwarded => values.flat_map(|v| forwarded(&v)).collect(),
            // One address set by the nearest proxy: the last line if several.
            ForwardingHeader::XRealIp => values.next_back().map(|v| node(&v)).into_iter().collect(),
        };
        let mut nearest = peer_ip;
        for hop in hops.into_iter().rev() {
            match hop {
                Hop::Addr(ip) if self.trusted(ip) => nearest = ip,
                Hop::Addr(ip) => return Some(ip),
                Hop::Unknown => break,
            }
        }
        Some(nearest)
    }

    /// The country a CDN wrote into the configured header, only when the request came
    /// through a trusted proxy: from anyone else the header is the client's own claim.
    pub fn country_header<'a>(&self, peer: Option<SocketAddr>, headers: &'a HeaderMap) -> Option<&'a str> {
        if !self.peer_is_trusted(peer) {
            return None;
        }
        self.country_header
            .as_deref()
            .and_then(|name| headers.get(name))
            .and_then(|v| v.to_str().ok())
    }
}

/// A header's text; bytes that are not UTF-8 become U+FFFD rather than losing the line (an
/// address never holds them, so only the entry holding them stops being one).
fn header_text(v: &HeaderValue) -> Cow<'_, str> {
    String::from_utf8_lossy(v.as_bytes())
}

/// `X-Forwarded-For: a, b, c`: comma-separated nodes; empty entries are skipped.
fn x_forwarded_for(value: &str) -> Vec<Hop> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(node)
        .collect()
}

/// One address as proxies write it: `192.0.2.1`, `192.0.2.1:51234`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`, any of them in double quotes, and RFC 7239's
/// obfuscated port (`192.0.2.1:_p1`). `unknown` and `_obfuscated` identifiers are no address.
fn node(text: &str) -> Hop {
    let s = text.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .trim();
    let ip = if let Ok(ip) = s.parse::<IpAddr>() {
        Some(ip)
    } else if let Ok(sa) = s.parse::<SocketAddr>() {
        Some(sa.ip())
    } else if let Some(rest) = s.strip_prefix('[') {
        // `[v6]` or `[v6]:port` with a port that is not a number (obfuscated).
        rest.split_once(']')
            .filter(|(_, tail)| tail.is_empty() || tail.starts_with(':'))
            .and_then(|(inner, _)| inner.parse::<IpAddr>().ok())
    } else {
        // `v4:port` where the port is obfuscated: one colon only, so never a bare IPv6.
        s.split_once(':')
            .filter(|(_, port)| !port.contains(':'))
            .and_then(|(host, _)| host.parse::<std::net::Ipv4Addr>().ok())
            .map(IpAddr::V4)
    };
    match ip {
        Some(ip) => Hop::Addr(ip.to_canonical()),
        None => Hop::Unknown,
    }
}

/// RFC 7239 `Forwarded`: elements separated by `,`, each `name=value` pairs separated by
/// `;`, values tokens or quoted strings (which may hold `,` `;` `=` and `\`-escapes). Each
/// element is one hop, its `for=` node; an element without one is a hop that said nothing.
fn forwarded(value: &str) -> Vec<Hop> {
    let mut hops = Vec::new();
    let mut element_for: Option<Hop> = None;
    let mut pair = String::new();
    let mut in_quotes = false;
    let mut chars = value.chars();
    fn end_pair(pair: &mut String, element_for: &mut Option<Hop>) {
        if let Some((name, value)) = pair.split_once('=') {
            if name.trim().eq_ignore_ascii_case("for") && element_for.is_none() {
                *element_for = Some(node(value));
            }
        }
        pair.clear();
    }
    let mut any = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                pair.push(c);
            }
            '\\' if in_quotes => {
                if let Some(escaped) = chars.next() {
                    pair.push(escaped);
                }
            }
            ';' if !in_quotes => end_pair(&mut pair, &mut element_for),
            ',' if !in_quotes => {
                end_pair(&mut pair, &mut element_for);
                if any {
                    hops.push(element_for.take().unwrap_or(Hop::Unknown));
                }
                element_for = None;
                any = false;
            }
            c => {
                if !c.is_whitespace() {
                    any = true;
                }
                pair.push(c);
            }
        }
    }
    end_pair(&mut pair, &mut element_for);
    if any {
        hops.push(element_for.unwrap_or(Hop::Unknown));
    }
    hops
}

/// The User-Agent as text. Header bytes outside visible ASCII are legal (obs-text) and real
/// clients send them (a phone model with `®`, a localised app name): UTF-8 is read as such,
/// and anything else as ISO-8859-1, HTTP's historical charset, so no byte blanks the header.
pub fn user_agent(headers: &HeaderMap) -> Cow<'_, str> {
    let Some(value) = headers.get(axum::http::header::USER_AGENT) else {
        return Cow::Borrowed("");
    };
    let bytes = value.as_bytes();
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(header: ForwardingHeader) -> ClientConfig {
        ClientConfig {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            forwarding_header: header,
            country_header: Some("CF-IPCountry".into()),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_bytes(value.as_bytes()).unwrap());
        }
        h
    }

    const PROXY: &str = "10.0.0.5:1234";

    fn via_proxy(cfg: &ClientConfig, pairs: &[(&'static str, &str)]) -> Option<IpAddr> {
        cfg.client_ip(Some(PROXY.parse().unwrap()), &headers(pairs))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let cfg = config(ForwardingHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.1.1.1")]);
        let direct: SocketAddr = "192.0.2.4:1234".parse().unwrap();
        assert_eq!(cfg.client_ip(Some(PROXY.parse().unwrap()), &h), ip("198.51.100.7"));
        assert_eq!(cfg.client_ip(Some(direct), &h), ip("192.0.2.4"));
        assert_eq!(cfg.client_ip(None, &h), None);
    }

    #[test]
    fn every_form_of_x_forwarded_for() {
        let cfg = config(ForwardingHeader::XForwardedFor);
        let xff = |v: &str| via_proxy(&cfg, &[("x-forwarded-for", v)]);
        for (value, want) in [
            ("203.0.113.7", "203.0.113.7"),
            ("203.0.113.7:51234", "203.0.113.7"),
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("\"203.0.113.7\"", "203.0.113.7"),
            ("\"[2001:db8::7]:443\"", "2001:db8::7"),
            ("  203.0.113.7  ", "203.0.113.7"),
            ("198.51.100.1,203.0.113.7", "203.0.113.7"),
            ("198.51.100.1 ,, 203.0.113.7 , ", "203.0.113.7"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
            ("203.0.113.7:51234, 10.2.2.2:80, [fd00::1]:8080", "203.0.113.7"),
        ] {
            assert_eq!(xff(value), ip(want), "{value:?}");
        }
        // Three visitors through one proxy stay three addresses.
        let seen: std::collections::HashSet<_> = ["203.0.113.7:51234", "203.0.113.8:40000", "[2001:db8::9]:1"]
            .into_iter()
            .map(xff)
            .collect();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn several_header_lines_are_one_list_in_order() {
        let cfg = config(ForwardingHeader::XForwardedFor);
        let got = via_proxy(
            &cfg,
            &[
                ("x-forwarded-for", "198.51.100.1, 203.0.113.7"),
                ("x-forwarded-for", "10.3.3.3"),
            ],
        );
        assert_eq!(got, ip("203.0.113.7"));
    }

    #[test]
    fn unknown_and_garbage_hops_are_not_addresses() {
        let cfg = config(ForwardingHeader::XForwardedFor);
        // The proxy that wrote `unknown` could not see its client: the last known address is
        // that proxy's, and nothing left of it (the client's own claims) is believed.
        assert_eq!(
            via_proxy(&cfg, &[("x-forwarded-for", "198.51.100.1, unknown, 10.4.4.4")]),
            ip("10.4.4.4")
        );
        assert_eq!(via_proxy(&cfg, &[("x-forwarded-for", "not-an-ip")]), ip("10.0.0.5"));
        assert_eq!(via_proxy(&cfg, &[("x-forwarded-for", "")]), ip("10.0.0.5"));
        // A client's garbage (even bytes that are not UTF-8) left of the proxy's entry
        // does not hide it.
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe junk, 203.0.113.7").unwrap(),
        );
        assert_eq!(cfg.client_ip(Some(PROXY.parse().unwrap()), &h), ip("203.0.113.7"));
        // Every hop trusted: the left-most is the client, inside our own network.
        assert_eq!(
            via_proxy(&cfg, &[("x-forwarded-for", "10.9.9.9, 10.4.4.4")]),
            ip("10.9.9.9")
        );
        // No header at all from a trusted proxy: the proxy itself.
        assert_eq!(via_proxy(&cfg, &[]), ip("10.0.0.5"));
    }

    #[test]
    fn trusted_proxy_behind_a_dual_stack_listener() {
        let cfg = config(ForwardingHeader::XForwardedFor);
        let mapped: SocketAddr = "[::ffff:10.0.0.5]:1234".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(cfg.client_ip(Some(mapped), &h), ip("203.0.113.7"));
    }

    #[test]
    fn rfc_7239_forwarded() {
        let cfg = config(ForwardingHeader::Forwarded);
        let fwd = |v: &str| via_proxy(&cfg, &[("forwarded", v)]);
        for (value, want) in [
            ("for=203.0.113.7", "203.0.113.7"),
            ("For=203.0.113.7;proto=https;by=10.0.0.5", "203.0.113.7"),
            ("for=\"203.0.113.7:51234\"", "203.0.113.7"),
            ("for=\"[2001:db8:cafe::17]\"", "2001:db8:cafe::17"),
            ("for=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            ("for=\"203.0.113.7:_p1\"", "203.0.113.7"),
            ("for=\"[2001:db8::7]:_p1\"", "2001:db8::7"),
            ("for=198.51.100.1, for=203.0.113.7", "203.0.113.7"),
            (
                "for=198.51.100.1;host=\"a,b;c=d\", for=203.0.113.7;proto=http",
                "203.0.113.7",
            ),
            ("for=203.0.113.7, for=10.7.7.7;by=10.0.0.5", "203.0.113.7"),
            ("  for = 203.0.113.7 ; proto=https ", "203.0.113.7"),
        ] {
            assert_eq!(fwd(value), ip(want), "{value:?}");
        }
        // `unknown`, obfuscated identifiers and elements without for= are no address.
        for value in [
            "for=unknown",
            "for=UNKNOWN",
            "for=_hidden",
            "for=\"_SEVKISEK\"",
            "proto=https",
            "for=198.51.100.1, for=unknown",
            "for=198.51.100.1, proto=https;by=10.0.0.5",
        ] {
            assert_eq!(fwd(value), ip("10.0.0.5"), "{value:?}");
        }
        assert_eq!(
            via_proxy(
                &cfg,
                &[("forwarded", "for=198.51.100.1"), ("forwarded", "for=203.0.113.7")]
            ),
            ip("203.0.113.7")
        );
        // Only the chosen header is read: an X-Forwarded-For the client wrote is ignored.
        assert_eq!(
            via_proxy(
                &cfg,
                &[("x-forwarded-for", "192.0.2.66"), ("forwarded", "for=203.0.113.7")]
            ),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn x_real_ip_when_chosen() {
        let cfg = config(ForwardingHeader::XRealIp);
        assert_eq!(via_proxy(&cfg, &[("x-real-ip", "203.0.113.7")]), ip("203.0.113.7"));
        assert_eq!(via_proxy(&cfg, &[("x-real-ip", "[2001:db8::7]:80")]), ip("2001:db8::7"));
        assert_eq!(via_proxy(&cfg, &[("x-real-ip", "unknown")]), ip("10.0.0.5"));
        // Not read when X-Forwarded-For is the configured header, and vice versa.
        assert_eq!(via_proxy(&cfg, &[("x-forwarded-for", "203.0.113.7")]), ip("10.0.0.5"));
        let xff = config(ForwardingHeader::XForwardedFor);
        assert_eq!(via_proxy(&xff, &[("x-real-ip", "203.0.113.7")]), ip("10.0.0.5"));
    }

    #[test]
    fn header_names_parse() {
        assert_eq!("X-Forwarded-For".parse(), Ok(ForwardingHeader::XForwardedFor));
        assert_eq!("forwarded".parse(), Ok(ForwardingHeader::Forwarded));
        assert_eq!("x-real-ip".parse(), Ok(ForwardingHeader::XRealIp));
        assert!("via"
            .parse::<ForwardingHeader>()
            .unwrap_err()
            .contains("x-forwarded-for"));
    }

    #[test]
    fn country_header_only_from_trusted_proxies() {
        let cfg = config(ForwardingHeader::XForwardedFor);
        let h = headers(&[("cf-ipcountry", "DE")]);
        assert_eq!(cfg.country_header(Some(PROXY.parse().unwrap()), &h), Some("DE"));
        assert_eq!(cfg.country_header(Some("192.0.2.4:1".parse().unwrap()), &h), None);
        assert_eq!(cfg.country_header(None, &h), None);
    }

    #[test]
    fn user_agent_bytes_outside_ascii() {
        let ua = |bytes: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(axum::http::header::USER_AGENT, HeaderValue::from_bytes(bytes).unwrap());
            user_agent(&h).into_owned()
        };
        assert_eq!(
            ua(b"Mozilla/5.0 (Linux; Android 12; X\xc2\xae Pro)"),
            "Mozilla/5.0 (Linux; Android 12; X® Pro)"
        );
        assert_eq!(
            ua(b"Mozilla/5.0 (Linux; Android 12; X\xae Pro)"),
            "Mozilla/5.0 (Linux; Android 12; X® Pro)"
        );
        assert_eq!(user_agent(&HeaderMap::new()), "");
    }
}
