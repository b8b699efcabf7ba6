//! Byte layouts of the BPF maps' keys and values, mirroring the C structs in
//! `bpf/sock_lb.c` byte for byte. Keys and values are fixed-size byte arrays (which aya
//! already treats as plain data), so the crate needs no `unsafe impl Pod`.
//!
//! Addresses and ports are stored as the kernel hands them to the hooks: network byte
//! order. Ids, counts and timestamps are host order.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::model::{Algorithm, ServiceKey};

/// Slots per slot-map entry (`SLOTS_PER_ENTRY` in the C): a service of up to 16 slots
/// is programmed with one map update.
pub const SLOTS_PER_ENTRY: usize = 16;

/// Slot-map entries `slots` slots take.
pub fn slot_entries(slots: usize) -> u64 {
    slots.div_ceil(SLOTS_PER_ENTRY) as u64
}

pub type NetnsKey = [u8; 8];
pub type NetnsValue = [u8; 4];
pub type SvcKey = [u8; 12];
pub type SvcValue = [u8; 20];
pub type SlotKey = [u8; 8];
pub type SlotValue = [u8; 8 * SLOTS_PER_ENTRY];
pub type MemberKey = [u8; 12];
pub type MemberValue = [u8; 1];
pub type AffinityKey = [u8; 16];
pub type AffinityValue = [u8; 16];
pub type RevKey = [u8; 16];
pub type RevValue = [u8; 8];

/// The value of a service entry (`struct svc_val`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceValue {
    /// Stable id of the service: keys its affinity and member entries.
    pub id: u32,
    /// Backend set: slot `i` is element `i % 16` of entry `(set, i / 16)`. A changed
    /// backend list gets a new
    /// set, written before the service points at it, so a hook never sees half a list.
    pub set: u32,
    pub count: u32,
    pub affinity_timeout_s: u32,
    pub algorithm: Algorithm,
}

fn addr_bytes(addr: SocketAddrV4) -> ([u8; 4], [u8; 2]) {
    (addr.ip().octets(), addr.port().to_be_bytes())
}

fn addr_from(ip: &[u8], port: &[u8]) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]),
        u16::from_be_bytes([port[0], port[1]]),
    )
}

pub fn netns_key(cookie: u64) -> NetnsKey {
    cookie.to_ne_bytes()
}

pub fn netns_value(vpc: u32) -> NetnsValue {
    vpc.to_ne_bytes()
}

pub fn parse_netns_key(b: &NetnsKey) -> u64 {
    u64::from_ne_bytes(*b)
}

pub fn parse_netns_value(b: &NetnsValue) -> u32 {
    u32::from_ne_bytes(*b)
}

pub fn svc_key(key: &ServiceKey) -> SvcKey {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&key.vpc.to_ne_bytes());
    b[4..8].copy_from_slice(&key.vip.octets());
    b[8..10].copy_from_slice(&key.port.to_be_bytes());
    b[10] = key.protocol.number();
    b
}

pub fn svc_value(v: &ServiceValue) -> SvcValue {
    let mut b = [0u8; 20];
    b[0..4].copy_from_slice(&v.id.to_ne_bytes());
    b[4..8].copy_from_slice(&v.set.to_ne_bytes());
    b[8..12].copy_from_slice(&v.count.to_ne_bytes());
    b[12..16].copy_from_slice(&v.affinity_timeout_s.to_ne_bytes());
    b[16] = match v.algorithm {
        Algorithm::Random => 0,
        Algorithm::Maglev => 1,
    };
    b
}

/// Decodes a service value read back from the map (tests and the bench check the kernel
/// holds what was planned).
pub fn parse_svc_value(b: &SvcValue) -> ServiceValue {
    let u = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    ServiceValue {
        id: u(0),
        set: u(4),
        count: u(8),
        affinity_timeout_s: u(12),
        algorithm: if b[16] == 1 {
            Algorithm::Maglev
        } else {
            Algorithm::Random
        },
    }
}

pub fn slot_key(set: u32, chunk: u32) -> SlotKey {
    let mut b = [0u8; 8];
    b[0..4].copy_from_slice(&set.to_ne_bytes());
    b[4..8].copy_from_slice(&chunk.to_ne_bytes());
    b
}

/// One slot-map entry: up to [`SLOTS_PER_ENTRY`] backends, the rest zero (never read:
/// the service's count bounds the index).
pub fn slot_value(addrs: &[SocketAddrV4]) -> SlotValue {
    let mut b = [0u8; 8 * SLOTS_PER_ENTRY];
    for (i, addr) in addrs.iter().take(SLOTS_PER_ENTRY).enumerate() {
        let (ip, port) = addr_bytes(*addr);
        b[i * 8..i * 8 + 4].copy_from_slice(&ip);
        b[i * 8 + 4..i * 8 + 6].copy_from_slice(&port);
    }
    b
}

/// The `n` first backends of a slot-map entry.
pub fn parse_slot_value(b: &SlotValue, n: usize) -> Vec<SocketAddrV4> {
    (0..n.min(SLOTS_PER_ENTRY))
        .map(|i| addr_from(&b[i * 8..i * 8 + 4], &b[i * 8 + 4..i * 8 + 6]))
        .collect()
}

pub fn member_key(service_id: u32, addr: SocketAddrV4) -> MemberKey {
    let (ip, port) = addr_bytes(addr);
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&service_id.to_ne_bytes());
    b[4..8].copy_from_slice(&ip);
    b[8..10].copy_from_slice(&port);
    b
}

/// Decodes an affinity value: (last use in `bpf_ktime_get_ns`, backend).
pub fn parse_affinity_value(b: &AffinityValue) -> (u64, SocketAddrV4) {
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&b[0..8]);
    (u64::from_ne_bytes(ts), addr_from(&b[8..12], &b[12..14]))
}

pub fn affinity_key(netns_cookie: u64, service_id: u32) -> AffinityKey {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&netns_cookie.to_ne_bytes());
    b[8..12].copy_from_slice(&service_id.to_ne_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    #[test]
    fn service_key_is_vpc_then_network_order_vip_port_then_protocol() {
        let key = ServiceKey {
            vpc: 7,
            vip: Ipv4Addr::new(10, 96, 0, 1),
            port: 0x1f90,
            protocol: Protocol::Udp,
        };
        let mut want = [0u8; 12];
        want[0..4].copy_from_slice(&7u32.to_ne_bytes());
        want[4..8].copy_from_slice(&[10, 96, 0, 1]);
        want[8..10].copy_from_slice(&[0x1f, 0x90]);
        want[10] = 17;
        assert_eq!(svc_key(&key), want);
    }

    #[test]
    fn service_value_round_trips() {
        let v = ServiceValue {
            id: 3,
            set: 99,
            count: 251,
            affinity_timeout_s: 10800,
            algorithm: Algorithm::Maglev,
        };
        assert_eq!(parse_svc_value(&svc_value(&v)), v);
    }

    #[test]
    fn slot_values_hold_16_backends_in_network_order() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 11), 8080);
        let c = SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 12), 80);
        let b = slot_value(&[a, c]);
        assert_eq!(&b[0..8], &[10, 1, 0, 11, 0x1f, 0x90, 0, 0]);
        assert_eq!(&b[8..14], &[10, 1, 0, 12, 0, 80]);
        assert!(b[16..].iter().all(|&x| x == 0));
        assert_eq!(parse_slot_value(&b, 2), vec![a, c]);
    }

    #[test]
    fn slot_entries_round_up() {
        assert_eq!([0, 1, 16, 17, 251].map(slot_entries), [0, 1, 1, 2, 16]);
    }
}
