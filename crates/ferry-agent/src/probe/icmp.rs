//! ICMP echo packets (IPv4): building requests and recognising replies. Pure.

use std::net::Ipv4Addr;

/// ICMP type of an echo request.
pub const ECHO_REQUEST: u8 = 8;
/// ICMP type of an echo reply.
pub const ECHO_REPLY: u8 = 0;

/// An echo request with identifier, sequence and payload, checksum filled in.
pub fn echo_request(ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + payload.len());
    p.extend_from_slice(&[ECHO_REQUEST, 0, 0, 0]);
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = match chunk {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A received echo reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoReply {
    pub ident: u16,
    pub seq: u16,
    pub payload: Vec<u8>,
}

/// Parses an ICMP message (no IP header, as a DGRAM ICMP socket delivers it); `None`
/// unless it is an echo reply.
pub fn parse_reply(icmp: &[u8]) -> Option<EchoReply> {
    if icmp.len() < 8 || icmp[0] != ECHO_REPLY || icmp[1] != 0 {
        return None;
    }
    Some(EchoReply {
        ident: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        payload: icmp[8..].to_vec(),
    })
}

/// Parses an IPv4 packet carrying ICMP (as a RAW socket delivers it): the source address
/// and the echo reply, if it is one.
pub fn parse_ipv4_reply(packet: &[u8]) -> Option<(Ipv4Addr, EchoReply)> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl || packet[9] != 1 {
        return None;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    Some((src, parse_reply(&packet[ihl..])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_has_valid_checksum() {
        let p = echo_request(0x1234, 7, b"ferry!");
        assert_eq!(&p[..2], &[8, 0]);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
        assert_eq!(
            checksum(&p),
            0,
            "a packet including its checksum sums to zero"
        );
        // odd length payload too
        assert_eq!(checksum(&echo_request(1, 1, b"abc")), 0);
    }

    #[test]
    fn replies() {
        let mut reply = echo_request(0x1234, 7, b"tok");
        reply[0] = ECHO_REPLY;
        let want = EchoReply {
            ident: 0x1234,
            seq: 7,
            payload: b"tok".to_vec(),
        };
        assert_eq!(parse_reply(&reply), Some(want.clone()));
        assert_eq!(
            parse_reply(&echo_request(1, 1, b"")),
            None,
            "a request is not a reply"
        );
        assert_eq!(parse_reply(&[0, 0, 0]), None);
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 253, 0, 2, 10, 253, 0, 1,
        ];
        ip.extend_from_slice(&reply);
        assert_eq!(
            parse_ipv4_reply(&ip),
            Some((Ipv4Addr::new(10, 253, 0, 2), want))
        );
        ip[9] = 6; // TCP
        assert_eq!(parse_ipv4_reply(&ip), None);
        assert_eq!(parse_ipv4_reply(&[]), None);
    }
}
