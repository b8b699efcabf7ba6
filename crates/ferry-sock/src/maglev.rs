//! Slot tables: how a service's backends are laid out in its slots.
//!
//! * Random: every backend repeated by its weight (weights divided by their gcd), so a
//!   uniform draw over the slots honours the weights.
//! * Maglev (Eisenbud et al., NSDI 2016) with weights: a prime-sized lookup table filled
//!   from per-backend permutations. The permutation of a backend depends only on its
//!   address, so every node computes the same table and a backend change moves few slots.

use std::net::SocketAddrV4;

/// Table sizes (primes). The smallest one with at least [`MAGLEV_SLOTS_PER_BACKEND`]
/// slots per backend is used; the paper wants M >> N for an even spread, and the slots
/// share the node's slot budget with every other service, hence not Cilium's 16381.
pub const MAGLEV_SIZES: &[u32] = &[251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521];

/// Slots per backend a Maglev table aims for (imbalance of a few percent).
pub const MAGLEV_SLOTS_PER_BACKEND: u32 = 20;

/// The Maglev table size for `backends` backends.
pub fn maglev_size(backends: usize) -> u32 {
    let want = (backends as u64).saturating_mul(MAGLEV_SLOTS_PER_BACKEND as u64);
    MAGLEV_SIZES
        .iter()
        .copied()
        .find(|&m| m as u64 >= want)
        .unwrap_or(MAGLEV_SIZES[MAGLEV_SIZES.len() - 1])
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Random slots: `backends` (sorted, distinct, weight > 0) each repeated weight/gcd times.
pub fn random_slots(backends: &[(SocketAddrV4, u16)]) -> Vec<SocketAddrV4> {
    let g = backends
        .iter()
        .fold(0u32, |g, &(_, w)| gcd(g, w as u32))
        .max(1);
    backends
        .iter()
        .flat_map(|&(addr, w)| std::iter::repeat_n(addr, (w as u32 / g) as usize))
        .collect()
}

/// FNV-1a over the address, salted: stable across processes, versions and nodes (unlike
/// std's `DefaultHasher`), which is what makes the table the same everywhere.
fn hash(addr: SocketAddrV4, salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for byte in addr
        .ip()
        .octets()
        .into_iter()
        .chain(addr.port().to_be_bytes())
    {
        h ^= byte as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits are weak for short inputs; finish with a multiply-xorshift.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Weighted Maglev table of size `m` (a prime) over `backends` (sorted, distinct,
/// weight > 0). Each round every backend earns its weight; it claims one slot per
/// `max weight` earned, walking its own permutation past taken slots.
pub fn maglev_slots(backends: &[(SocketAddrV4, u16)], m: u32) -> Vec<SocketAddrV4> {
    if backends.is_empty() || m == 0 {
        return Vec::new();
    }
    let m64 = m as u64;
    let perms: Vec<(u64, u64)> = backends
        .iter()
        .map(|&(addr, _)| {
            let offset = hash(addr, 0x5eed_0001) % m64;
            let skip = hash(addr, 0x5eed_0002) % (m64 - 1).max(1) + 1;
            (offset, skip)
        })
        .collect();
    let max_w = backends.iter().map(|&(_, w)| w as u64).max().unwrap_or(1);
    let mut next = vec![0u64; backends.len()];
    let mut credit = vec![0u64; backends.len()];
    let mut table: Vec<Option<usize>> = vec![None; m as usize];
    let mut filled = 0u32;
    while filled < m {
        for (i, &(_, w)) in backends.iter().enumerate() {
            credit[i] += w as u64;
            while credit[i] >= max_w && filled < m {
                credit[i] -= max_w;
                let (offset, skip) = perms[i];
                loop {
                    let c = ((offset + next[i] * skip) % m64) as usize;
                    next[i] += 1;
                    if table[c].is_none() {
                        table[c] = Some(i);
                        filled += 1;
                        break;
                    }
                }
            }
            if filled == m {
                break;
            }
        }
    }
    table
        .into_iter()
        .map(|slot| backends[slot.unwrap_or(0)].0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    fn be(last: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, last), 8080)
    }

    fn counts(slots: &[SocketAddrV4]) -> BTreeMap<SocketAddrV4, usize> {
        let mut c = BTreeMap::new();
        for s in slots {
            *c.entry(*s).or_default() += 1;
        }
        c
    }

    #[test]
    fn random_slots_repeat_backends_by_reduced_weight() {
        type Case = (&'static str, Vec<(SocketAddrV4, u16)>, Vec<SocketAddrV4>);
        let cases: &[Case] = &[
            ("one backend", vec![(be(1), 1)], vec![be(1)]),
            (
                "equal weights collapse to one slot each",
                vec![(be(1), 5), (be(2), 5)],
                vec![be(1), be(2)],
            ),
            (
                "2:1 weights",
                vec![(be(1), 20), (be(2), 10)],
                vec![be(1), be(1), be(2)],
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(&random_slots(input), want, "{name}");
        }
    }

    #[test]
    fn maglev_size_grows_with_backends() {
        assert_eq!(maglev_size(1), 251);
        assert_eq!(maglev_size(10), 251);
        assert_eq!(maglev_size(13), 509);
        assert_eq!(maglev_size(100), 2039);
        assert_eq!(maglev_size(100_000), 65521);
    }

    #[test]
    fn maglev_fills_every_slot_evenly() {
        let backends: Vec<_> = (1..=10).map(|i| (be(i), 1)).collect();
        let table = maglev_slots(&backends, 251);
        assert_eq!(table.len(), 251);
        let c = counts(&table);
        assert_eq!(c.len(), 10);
        for (addr, n) in c {
            assert!((25..=26).contains(&n), "{addr} has {n} of 251 slots");
        }
    }

    #[test]
    fn maglev_honours_weights() {
        let table = maglev_slots(&[(be(1), 3), (be(2), 1)], 509);
        let c = counts(&table);
        let (a, b) = (c[&be(1)] as f64, c[&be(2)] as f64);
        assert!((a / b - 3.0).abs() < 0.1, "3:1 weights gave {a}:{b}");
    }

    #[test]
    fn maglev_removing_a_backend_moves_only_its_slots_and_few_others() {
        let before: Vec<_> = (1..=10).map(|i| (be(i), 1)).collect();
        let after: Vec<_> = before
            .iter()
            .copied()
            .filter(|&(a, _)| a != be(4))
            .collect();
        let t0 = maglev_slots(&before, 251);
        let t1 = maglev_slots(&after, 251);
        let moved_others = t0
            .iter()
            .zip(&t1)
            .filter(|(x, y)| **x != be(4) && x != y)
            .count();
        // Only be(4)'s ~25 slots must move; Maglev allows a little extra churn.
        assert!(
            moved_others <= 25,
            "{moved_others} slots of live backends moved"
        );
        assert!(!t1.contains(&be(4)));
    }

    #[test]
    fn maglev_table_depends_only_on_the_backends() {
        let b: Vec<_> = (1..=5).map(|i| (be(i), 1)).collect();
        assert_eq!(maglev_slots(&b, 251), maglev_slots(&b, 251));
    }
}
