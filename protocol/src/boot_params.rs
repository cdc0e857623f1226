//! The agent's kernel command-line parameters: the guest's hostname and its eth0 address.
//! The guest kernel has no `ip=` autoconfiguration; the agent reads these and configures
//! the interfaces itself.
//!
//! ```text
//! detvm.hostname=web detvm.ip=10.0.0.2/24 detvm.gw=10.0.0.1
//! ```
//!
//! All are optional. Without `detvm.ip=`, eth0 stays down (loopback is always up);
//! `detvm.gw=` needs `detvm.ip=`.

use std::net::Ipv4Addr;

pub const HOSTNAME: &str = "detvm.hostname=";
pub const IP: &str = "detvm.ip=";
pub const GATEWAY: &str = "detvm.gw=";

/// The longest hostname Linux accepts (`HOST_NAME_MAX`).
pub const MAX_HOSTNAME: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootParams {
    pub hostname: Option<String>,
    /// eth0's address and prefix length.
    pub ip: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
}

impl BootParams {
    /// Parses the `detvm.*` parameters of a kernel command line (`/proc/cmdline`);
    /// other words are ignored.
    pub fn parse(cmdline: &str) -> Result<BootParams, String> {
        let mut p = BootParams::default();
        for word in cmdline.split_ascii_whitespace() {
            if let Some(v) = word.strip_prefix(HOSTNAME) {
                check_hostname(v)?;
                p.hostname = Some(v.to_string());
            } else if let Some(v) = word.strip_prefix(IP) {
                let (addr, len) = v.split_once('/').ok_or_else(|| {
                    format!("{IP}{v}: write the address with its prefix, e.g. {IP}10.0.0.2/24")
                })?;
                let addr: Ipv4Addr = addr
                    .parse()
                    .map_err(|_| format!("{IP}{v}: {addr:?} is not an IPv4 address"))?;
                let len: u8 = len
                    .parse()
                    .ok()
                    .filter(|l| *l <= 32)
                    .ok_or_else(|| format!("{IP}{v}: prefix length {len:?} is not 0 to 32"))?;
                p.ip = Some((addr, len));
            } else if let Some(v) = word.strip_prefix(GATEWAY) {
                let gw: Ipv4Addr = v
                    .parse()
                    .map_err(|_| format!("{GATEWAY}{v}: not an IPv4 address"))?;
                p.gateway = Some(gw);
            }
        }
        if p.gateway.is_some() && p.ip.is_none() {
            return Err(format!("{GATEWAY} needs {IP} (eth0 has no address)"));
        }
        Ok(p)
    }

    /// The parameters as kernel command-line words (what [`BootParams::parse`] reads).
    pub fn to_cmdline(&self) -> String {
        let mut words = Vec::new();
        if let Some(h) = &self.hostname {
            words.push(format!("{HOSTNAME}{h}"));
        }
        if let Some((addr, len)) = self.ip {
            words.push(format!("{IP}{addr}/{len}"));
        }
        if let Some(gw) = self.gateway {
            words.push(format!("{GATEWAY}{gw}"));
        }
        words.join(" ")
    }
}

/// A hostname Linux and resolvers accept: 1 to 64 of `A-Za-z0-9-.`, no leading `-`.
pub fn check_hostname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_HOSTNAME
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "hostname {name:?} is not valid: use 1 to {MAX_HOSTNAME} letters, digits, `-` and `.`"
        ))
    }
}

/// The netmask of a prefix length (24 → 255.255.255.0).
pub fn netmask(prefix: u8) -> Ipv4Addr {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Ipv4Addr::from(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_parameters() {
        let line =
            "console=ttyS0 quiet detvm.hostname=web detvm.ip=10.0.0.2/24 detvm.gw=10.0.0.1\n";
        let p = BootParams::parse(line).unwrap();
        assert_eq!(p.hostname.as_deref(), Some("web"));
        assert_eq!(p.ip, Some((Ipv4Addr::new(10, 0, 0, 2), 24)));
        assert_eq!(p.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            p.to_cmdline(),
            "detvm.hostname=web detvm.ip=10.0.0.2/24 detvm.gw=10.0.0.1"
        );
        assert_eq!(BootParams::parse(&p.to_cmdline()).unwrap(), p);
        assert_eq!(BootParams::parse("quiet").unwrap(), BootParams::default());
    }

    #[test]
    fn bad_values_say_what_to_write() {
        for bad in [
            "detvm.ip=10.0.0.2",
            "detvm.ip=10.0.0.256/24",
            "detvm.ip=10.0.0.2/33",
            "detvm.gw=x detvm.ip=10.0.0.2/24",
            "detvm.gw=10.0.0.1",
            "detvm.hostname=",
            "detvm.hostname=-x",
            "detvm.hostname=a_b",
        ] {
            assert!(BootParams::parse(bad).is_err(), "{bad}");
        }
        assert!(check_hostname(&"a".repeat(64)).is_ok());
        assert!(check_hostname(&"a".repeat(65)).is_err());
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(netmask(9), Ipv4Addr::new(255, 128, 0, 0));
    }
}
