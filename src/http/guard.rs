//! Which addresses a user may make this server call (webhooks): never loopback, private,
//! link-local (cloud metadata services live there), shared, multicast, reserved or
//! documentation addresses, nor IPv6 forms that embed one of them, and only `https`,
//! unless the deployment allows private callbacks (tests, a closed network). Pure: the
//! caller resolves names and checks every address they resolve to, and connects only to
//! those it checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is an address of the public Internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address: judge that one.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return public_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    // SIIT (::ffff:0:a.b.c.d) carries one too.
    if s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
        return public_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x2002 {
        return public_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254 is a metadata service)
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0) // Teredo: tunnels to an address it hides
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64
        || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0))
    // IPv4-compatible
}

/// A callback URL taken apart: where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host as written (a name, or an address).
    pub host: String,
    /// The port (the scheme's default when absent).
    pub port: u16,
    /// The address, when the host is one.
    pub ip: Option<IpAddr>,
}

/// Check `url`'s form, scheme and (when it is an address) host; `allow_private` also
/// allows `http` and any address.
pub fn check_url(url: &str, allow_private: bool) -> Result<Target, String> {
    let parsed = url::Url::parse(url).map_err(|_| "the callback URL does not parse".to_string())?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return Err("callback URLs must use https".into()),
    }
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| "the callback URL has no port".to_string())?;
    let (host, ip) = match parsed.host() {
        Some(url::Host::Domain(d)) => (d.to_string(), None),
        Some(url::Host::Ipv4(a)) => (a.to_string(), Some(IpAddr::V4(a))),
        Some(url::Host::Ipv6(a)) => (a.to_string(), Some(IpAddr::V6(a))),
        None => return Err("the callback URL has no host".into()),
    };
    if let Some(ip) = ip {
        check_address(ip, allow_private)?;
    }
    Ok(Target { host, port, ip })
}

/// Refuse `ip` unless it is public or private ones are allowed.
pub fn check_address(ip: IpAddr, allow_private: bool) -> Result<(), String> {
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        // The address is not named: a name's private addresses are not for a caller to map.
        Err("the callback's host is, or resolves to, an address that is not public \
             (loopback, private, link-local and metadata addresses are refused)"
            .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_refused() {
        for bad in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.3.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::ffff:0:7f00:1",
            "2001::1",
            "64:ff9b:1::a00:1",
        ] {
            assert!(!is_public(bad.parse().unwrap()), "{bad}");
        }
        for good in ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "64:ff9b::808:808"] {
            assert!(is_public(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn urls_need_https_and_a_public_literal() {
        assert!(check_url("https://example.org/hook", false).is_ok());
        assert!(check_url("http://example.org/hook", false).is_err());
        assert!(check_url("http://example.org/hook", true).is_ok());
        for bad in [
            "https://127.0.0.1/x",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/",
            "https://[::1]:8443/",
            "https://0x7f000001/",
            "https://2130706433/",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
            assert!(check_url(bad, true).is_ok(), "{bad} with private allowed");
        }
        let t = check_url("https://example.org/x", false).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.ip), ("example.org", 443, None));
        assert!(check_url("not a url", true).is_err());
    }
}
