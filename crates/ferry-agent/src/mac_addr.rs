//! A 48-bit Ethernet address, parsed from and printed as `0a:00:00:01:01:0a`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A unicast or multicast MAC address. [`MacAddr::is_unicast`] tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a MAC address (expected six hex octets like 0a:00:00:01:01:0a)")]
pub struct ParseMacError {
    pub input: String,
}

impl MacAddr {
    /// True for an assignable interface address: not multicast/broadcast, not all zero.
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<MacAddr, ParseMacError> {
        let err = || ParseMacError {
            input: s.to_string(),
        };
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let cases = [
            ("0a:00:00:01:01:0a", Some([0x0a, 0, 0, 1, 1, 0x0a])),
            ("0A-00-00-01-01-0A", Some([0x0a, 0, 0, 1, 1, 0x0a])),
            ("0a:00:00:01:01", None),
            ("0a:00:00:01:01:0a:00", None),
            ("0a:00:00:01:01:zz", None),
            ("a:0:0:1:1:a", None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = input.parse::<MacAddr>().ok().map(|m| m.0);
            assert_eq!(got, want, "{input}");
        }
        let m: MacAddr = "0A:00:00:01:01:0A".parse().expect("mac");
        assert_eq!(m.to_string(), "0a:00:00:01:01:0a");
        assert!(m.is_unicast());
        assert!(
            !"01:00:5e:00:00:01"
                .parse::<MacAddr>()
                .expect("mac")
                .is_unicast()
        );
        assert!(
            !"00:00:00:00:00:00"
                .parse::<MacAddr>()
                .expect("mac")
                .is_unicast()
        );
    }
}
