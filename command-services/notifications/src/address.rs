//! Where webhooks may go: public addresses only, unless the allow-list
//! (`SHOP_WEBHOOKS_ALLOW`) names a host, an address or a CIDR block.
//!
//! Checked at registration and again at each delivery, on the addresses the host
//! resolves to then; the request then goes to the address that was checked (no second
//! resolution a DNS answer could change in between), and redirects are not followed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

/// How long a host's resolution may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Non-public targets that may be called anyway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    hosts: Vec<String>,
    networks: Vec<IpNet>,
}

impl AllowList {
    /// From a comma-separated list of host names, addresses and CIDR blocks, e.g.
    /// `127.0.0.1/32,hooks.internal,::1`.
    ///
    /// # Errors
    /// An entry that is none of these.
    pub fn parse(list: &str) -> Result<AllowList, String> {
        let mut allow = AllowList::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Ok(net) = IpNet::from_str(entry) {
                allow.networks.push(net);
            } else if let Ok(ip) = IpAddr::from_str(entry) {
                allow.networks.push(IpNet::from(ip));
            } else if entry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                allow.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "SHOP_WEBHOOKS_ALLOW: {entry:?} is not a host name, an address or a CIDR block"
                ));
            }
        }
        Ok(allow)
    }

    /// Whether a request to `host` (as written in the URL) at `ip` may go out.
    pub fn permits(&self, host: &str, ip: IpAddr) -> bool {
        is_public(ip)
            || self.networks.iter().any(|net| net.contains(&ip))
            || self
                .hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host.trim_end_matches('.')))
    }
}

/// Whether an address is on the public internet: not loopback, private, link-local,
/// shared (CGNAT), documentation, benchmarking, multicast, broadcast or reserved, in
/// IPv4 or IPv6 (IPv4-mapped and NAT64 addresses are judged by their IPv4 address).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b {
                let o = v6.octets();
                return is_public_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible, deprecated
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

/// Why a URL is not a webhook target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("must be an absolute http or https URL without credentials, at most 2000 characters")]
    Malformed,
    #[error("{host} does not resolve")]
    Unresolved { host: String },
    #[error("{} not a public address (only public addresses receive webhooks unless SHOP_WEBHOOKS_ALLOW names them)", named(host, ip))]
    NotPublic { host: String, ip: IpAddr },
}

/// `10.0.0.1 is`, or `hooks.example is 10.0.0.1,` for a name.
fn named(host: &str, ip: &IpAddr) -> String {
    if IpAddr::from_str(host).is_ok_and(|h| h == *ip) {
        format!("{ip} is")
    } else {
        format!("{host} is {ip},")
    }
}

/// A webhook URL, parsed and checked for shape (not yet for its addresses).
#[derive(Debug, Clone)]
pub struct Target {
    pub url: reqwest::Url,
    pub host: String,
    pub port: u16,
}

impl Target {
    /// # Errors
    /// Not an absolute http(s) URL with a host, or one with a user name or password.
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        let url = reqwest::Url::parse(text).map_err(|_| TargetError::Malformed)?;
        let ok = text.len() <= 2000
            && matches!(url.scheme(), "http" | "https")
            && url.username().is_empty()
            && url.password().is_none();
        let host = url
            .host_str()
            .filter(|_| ok)
            .ok_or(TargetError::Malformed)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port_or_known_default().ok_or(TargetError::Malformed)?;
        Ok(Target { url, host, port })
    }

    /// The addresses to call: every address the host resolves to, each permitted.
    ///
    /// # Errors
    /// The host does not resolve, or one of its addresses is not permitted.
    pub async fn resolve(&self, allow: &AllowList) -> Result<Vec<SocketAddr>, TargetError> {
        let addrs: Vec<SocketAddr> = match IpAddr::from_str(&self.host) {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((self.host.as_str(), self.port)),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(Iterator::collect)
            .unwrap_or_default(),
        };
        if addrs.is_empty() {
            return Err(TargetError::Unresolved {
                host: self.host.clone(),
            });
        }
        // One address that is not permitted refuses the host: a name that resolves to a
        // public and a private address must not reach the private one by chance.
        if let Some(bad) = addrs.iter().find(|a| !allow.permits(&self.host, a.ip())) {
            return Err(TargetError::NotPublic {
                host: self.host.clone(),
                ip: bad.ip(),
            });
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip(private)), "{private}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(ip(public)), "{public}");
        }
    }

    #[test]
    fn the_allow_list_names_hosts_addresses_and_blocks() {
        let allow = AllowList::parse("127.0.0.1/32, hooks.internal ,::1,10.0.0.0/8").unwrap();
        assert!(allow.permits("x", ip("127.0.0.1")));
        assert!(!allow.permits("x", ip("127.0.0.2")));
        assert!(allow.permits("x", ip("::1")));
        assert!(allow.permits("x", ip("10.9.9.9")));
        assert!(allow.permits("HOOKS.internal", ip("192.168.0.1")));
        assert!(!allow.permits("other.internal", ip("192.168.0.1")));
        assert!(AllowList::default().permits("example.com", ip("8.8.8.8")));
        assert!(!AllowList::default().permits("localhost", ip("127.0.0.1")));
        assert!(AllowList::parse("not a host!").is_err());
        assert_eq!(AllowList::parse("").unwrap(), AllowList::default());
    }

    #[test]
    fn urls_must_be_http_without_credentials() {
        assert!(Target::parse("https://hooks.example.com/shop?x=1").is_ok());
        assert_eq!(Target::parse("http://[::1]:9000/").unwrap().host, "::1");
        for bad in [
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "example.com/hook",
            "",
            "http://",
            "mailto:a@example.com",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn loopback_is_refused_unless_allowed() {
        let target = Target::parse("http://127.0.0.1:9/hook").unwrap();
        assert!(matches!(
            target.resolve(&AllowList::default()).await,
            Err(TargetError::NotPublic { .. })
        ));
        let refused = target.resolve(&AllowList::default()).await.unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("127.0.0.1 is not a public address"),
            "{refused}"
        );
        let allow = AllowList::parse("127.0.0.0/8").unwrap();
        assert_eq!(target.resolve(&allow).await.unwrap().len(), 1);
        let localhost = Target::parse("http://localhost:9/hook").unwrap();
        assert!(localhost.resolve(&AllowList::default()).await.is_err());
    }
}
