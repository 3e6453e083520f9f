//! Who sent a request: the client IP (X-Forwarded-For honoured only from trusted proxies),
//! the User-Agent and a CDN country header.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

#[derive(Clone, Debug, Default)]
pub struct ClientConfig {
    /// Proxies whose X-Forwarded-For we believe (load balancers, CDNs).
    pub trusted_proxies: Vec<IpNet>,
    /// A header set by a trusted CDN with the visitor's country (e.g. CF-IPCountry).
    pub country_header: Option<String>,
}

impl ClientConfig {
    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client address: the peer, or, when the peer is a trusted proxy, the right-most
    /// address in X-Forwarded-For that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer_ip = peer.map(|p| p.ip())?;
        if !self.trusted(peer_ip) {
            return Some(peer_ip);
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|ip| !self.trusted(*ip))
                .unwrap_or(peer_ip),
        )
    }

    pub fn country_header<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        self.country_header
            .as_deref()
            .and_then(|name| headers.get(name))
            .and_then(|v| v.to_str().ok())
    }
}

pub fn user_agent(headers: &HeaderMap) -> &str {
    headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let cfg = ClientConfig {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            country_header: None,
        };
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7, 10.1.1.1".parse().unwrap(),
        );
        let via_proxy: SocketAddr = "10.0.0.5:1234".parse().unwrap();
        let direct: SocketAddr = "192.0.2.4:1234".parse().unwrap();
        assert_eq!(
            cfg.client_ip(Some(via_proxy), &h),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(cfg.client_ip(Some(direct), &h), Some("192.0.2.4".parse().unwrap()));
    }
}
