//! Country of a visitor: from a MaxMind-format database when one is configured, else from
//! a trusted CDN header (such as CF-IPCountry), else unknown (empty).

use std::net::IpAddr;
use std::path::Path;

use crate::{Error, Result};

pub struct Geo {
    reader: Option<maxminddb::Reader<Vec<u8>>>,
}

impl std::fmt::Debug for Geo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Geo").field("database", &self.reader.is_some()).finish()
    }
}

impl Geo {
    pub fn none() -> Self {
        Self { reader: None }
    }

    pub fn open(path: &Path) -> Result<Self> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|e| Error::Spec {
            source_name: path.display().to_string(),
            message: format!("GeoIP database: {e}"),
        })?;
        Ok(Self { reader: Some(reader) })
    }

    /// ISO 3166 alpha-2 code, or empty when unknown.
    pub fn country(&self, ip: Option<IpAddr>, cdn_header: Option<&str>) -> String {
        if let (Some(reader), Some(ip)) = (&self.reader, ip) {
            if let Ok(Some(country)) = reader.lookup::<maxminddb::geoip2::Country>(ip) {
                if let Some(code) = country.country.and_then(|c| c.iso_code) {
                    return code.to_string();
                }
            }
        }
        match cdn_header.map(str::trim) {
            // XX and T1 are Cloudflare's "unknown" and "Tor".
            Some(code)
                if code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()) && code != "XX" && code != "T1" =>
            {
                code.to_ascii_uppercase()
            }
            _ => String::new(),
        }
    }
}
