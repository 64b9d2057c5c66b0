//! What kind of address a destination resolved to, for the egress policy:
//! public, private (loopback, private ranges and the like: reachable only
//! through an entry that allows it) or forbidden (never reachable: link-local,
//! cloud metadata services, unspecified, multicast, broadcast, reserved).
//! IPv4 addresses embedded in IPv6 (mapped, NAT64, 6to4) are judged as the
//! IPv4 address they carry. Pure functions; nothing here resolves or connects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How an address may be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// On the public internet.
    Public,
    /// Loopback, private, shared (CGNAT), unique-local, documentation or
    /// benchmarking: only through an IP-literal or `private:` entry.
    Private,
    /// Never: link-local, metadata services, unspecified, multicast,
    /// broadcast, reserved.
    Forbidden,
}

/// Cloud instance-metadata services (AWS, GCP, Azure, OpenStack at
/// 169.254.169.254, inside link-local anyway; AWS over IPv6; Alibaba).
pub(crate) const METADATA: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

/// The class of `ip`.
pub(crate) fn classify(ip: IpAddr) -> Class {
    let ip = canonical(ip);
    if METADATA.contains(&ip) {
        return Class::Forbidden;
    }
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// `ip` with an embedded IPv4 address taken out: IPv4-mapped
/// (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002:AABB:CCDD::/48`).
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    };
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return embedded(s[6], s[7]);
    }
    if s[0] == 0x2002 {
        return embedded(s[1], s[2]);
    }
    ip
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let o = ip.octets();
    if ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || o[0] == 0
        || o[0] >= 240
    {
        return Class::Forbidden;
    }
    if ip.is_loopback()
        || ip.is_private()
        || ip.is_documentation()
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared 100.64/10
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
    // IETF protocol assignments 192.0.0/24
    {
        return Class::Private;
    }
    Class::Public
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    let seg0 = ip.segments()[0];
    if ip.is_unspecified()
        || ip.is_multicast()
        || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg0 & 0xffc0) == 0xfec0
    // deprecated site-local fec0::/10
    {
        return Class::Forbidden;
    }
    if ip.is_loopback()
        || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg0 == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || seg0 == 0x0100
    // discard-only 100::/64
    {
        return Class::Private;
    }
    Class::Public
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Class {
        classify(s.parse().expect("ip literal"))
    }

    #[test]
    fn addresses_are_public_private_or_forbidden() {
        for ip in [
            "169.254.169.254",
            "169.254.1.1",
            "fd00:ec2::254",
            "100.100.100.200",
            "fe80::1",
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "ff02::1",
            "240.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
        ] {
            assert_eq!(class(ip), Class::Forbidden, "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "64:ff9b::7f00:1",
            "2001:db8::1",
        ] {
            assert_eq!(class(ip), Class::Private, "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert_eq!(class(ip), Class::Public, "{ip}");
        }
    }
}
