//! Service addresses, pure: which ClusterIP and EIP each YusurService holds. A service keeps
//! what it has (its spec's, its status's, or one handed out and not yet seen), oldest
//! service first when two want the same; new ones come from the pools. [`Claims`] remember
//! who holds what across passes, so a pass over a few services need not read the others.
//!
//! Over 600 lines with its tests (~340 without): the rules and the tables and proptest
//! that pin them down stay together.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ferry_api::{ServiceType, YusurService};

use crate::ipam::Pool;
use crate::problem::Problem;

/// Addresses the controller hands out for services.
#[derive(Debug, Clone)]
pub struct ServicePools {
    pub cluster_ips: Pool,
    pub eips: Option<Pool>,
}

/// Service addresses handed out but not yet seen in a service's status.
#[derive(Debug, Default, Clone)]
pub struct Pending {
    cluster_ips: HashMap<String, Ipv4Addr>,
    eips: HashMap<String, Ipv4Addr>,
    /// Status addresses found held by another service and given up since the last
    /// [`Pending::take_moved`].
    moved: Vec<Moved>,
}

/// A status address given up because another service holds it: a client of `service`
/// sees its address change once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub service: String,
    /// `clusterIP` or `EIP`.
    pub kind: &'static str,
    pub address: Ipv4Addr,
    pub holder: Option<String>,
}

impl Pending {
    /// The moves planned since the last call. A leader's pass warns of them; a standby's
    /// pending addresses are its own guesses, so its moves are nobody's.
    pub fn take_moved(&mut self) -> Vec<Moved> {
        std::mem::take(&mut self.moved)
    }

    /// The services given an address here that `before` did not have (the same address
    /// kept is not new).
    pub fn handed_out_since(&self, before: &Pending) -> BTreeSet<String> {
        let new = |now: &HashMap<String, Ipv4Addr>, then: &HashMap<String, Ipv4Addr>| {
            now.iter()
                .filter(|(k, ip)| then.get(*k) != Some(*ip))
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()
        };
        new(&self.cluster_ips, &before.cluster_ips)
            .into_iter()
            .chain(new(&self.eips, &before.eips))
            .collect()
    }
}

pub(crate) fn key_of(s: &YusurService) -> String {
    format!(
        "{}/{}",
        s.metadata.namespace.as_deref().unwrap_or_default(),
        s.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A service's (ClusterIP, EIP), or why it cannot have them.
pub type AddressOutcome = Result<(Ipv4Addr, Option<Ipv4Addr>), Problem>;

/// Which service holds each ClusterIP and EIP, kept across passes so that a pass over a
/// few services need not read every other one.
#[derive(Debug, Default)]
pub struct Claims {
    vips: BTreeMap<Ipv4Addr, String>,
    eips: BTreeMap<Ipv4Addr, String>,
}

impl Claims {
    /// Claims the EIP `ip` for `key`; the holder's key when another holds it.
    pub fn claim_eip(&mut self, ip: Ipv4Addr, key: &str) -> Result<(), String> {
        match self.eips.get(&ip) {
            Some(h) if h != key => Err(h.clone()),
            _ => {
                self.eips.insert(ip, key.to_string());
                Ok(())
            }
        }
    }

    /// Records that `key` (an ordinary Service) holds the cluster IP `ip`: a YusurService
    /// must never be given it (the API server would refuse the status that says so).
    pub fn claim_vip(&mut self, ip: Ipv4Addr, key: &str) {
        self.vips.entry(ip).or_insert_with(|| key.to_string());
    }

    /// A free EIP of `pool` for `key`.
    pub fn allocate_eip(
        &mut self,
        pool: &Pool,
        key: &str,
    ) -> Result<Ipv4Addr, crate::ipam::IpamError> {
        let ip = pool.allocate_where(|ip| self.eips.contains_key(ip))?;
        self.eips.insert(ip, key.to_string());
        Ok(ip)
    }

    /// Forgets what `keys` hold (they are about to be decided again).
    pub fn release(&mut self, keys: &BTreeSet<String>) {
        // Every pass releases what it re-plans, often nothing: skip the scan of every
        // claim then.
        if keys.is_empty() {
            return;
        }
        self.vips.retain(|_, k| !keys.contains(k));
        self.eips.retain(|_, k| !keys.contains(k));
    }
}

impl Claims {
    /// The claims of a full pass planned off the pass loop (with `pending`, from
    /// `pending_before`), as the loop takes them in: only the loop hands addresses out, so
    /// what the plan handed out itself is dropped, as is what `replanned` (the services
    /// the loop planned meanwhile) hold. Returns them with every service the loop must
    /// plan again on them.
    pub fn taken_in(
        mut self,
        pending: &Pending,
        pending_before: &Pending,
        mut replanned: BTreeSet<String>,
    ) -> (Claims, BTreeSet<String>) {
        replanned.extend(pending.handed_out_since(pending_before));
        self.release(&replanned);
        (self, replanned)
    }

    /// Takes what `holders` hold in `other` (the loop's claims for what it planned).
    pub fn absorb(&mut self, other: &Claims, holders: &BTreeSet<String>) {
        for (mine, theirs) in [(&mut self.vips, &other.vips), (&mut self.eips, &other.eips)] {
            mine.extend(
                theirs
                    .iter()
                    .filter(|(_, k)| holders.contains(*k))
                    .map(|(ip, k)| (*ip, k.clone())),
            );
        }
    }
}

/// The address a service was handed out by a controller (`status`, else `pending`: handed
/// out and not yet written), unless another service holds it. A handed-out address is never
/// fought over: the service that finds it held gets a new one. Two leaders around a
/// handover can hand one address out twice (a write of the old leader landing after the new
/// one planned, or a cache that had not seen it yet); a conflict reported instead left the
/// second service unprogrammed for good (17 of 10,000 at 10k after a leadership flap).
/// Addresses a user asked for in the spec are reported on conflict, not moved.
fn handed_out(
    used: &BTreeMap<Ipv4Addr, String>,
    key: &str,
    status: Option<Ipv4Addr>,
    pending: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let free = |ip: &Ipv4Addr| used.get(ip).is_none_or(|h| h == key);
    status.filter(free).or(pending.filter(free))
}

/// The ClusterIP a service's spec asks for.
fn spec_vip(s: &YusurService) -> Option<Ipv4Addr> {
    s.spec.cluster_ip.as_deref().and_then(|i| i.parse().ok())
}

/// The ClusterIP a service's status shows.
fn status_vip(s: &YusurService) -> Option<Ipv4Addr> {
    let status = s.status.as_ref().and_then(|st| st.cluster_ip.as_deref());
    status.and_then(|i| i.parse().ok())
}

/// The ClusterIP `s` was handed out, if nobody else holds it (see [`handed_out`]).
fn handed_vip(
    used: &BTreeMap<Ipv4Addr, String>,
    s: &YusurService,
    key: &str,
    pending: &Pending,
) -> Option<Ipv4Addr> {
    handed_out(
        used,
        key,
        status_vip(s),
        pending.cluster_ips.get(key).copied(),
    )
}

/// Allocates (or confirms) the ClusterIP and EIP of `services`, given what the others
/// hold in `claims` (which then holds theirs too).
pub fn service_addresses(
    services: &[Arc<YusurService>],
    pools: &ServicePools,
    eips: &BTreeMap<String, Ipv4Addr>,
    pending: &mut Pending,
    claims: &mut Claims,
) -> BTreeMap<String, AddressOutcome> {
    let Claims {
        vips: used_vip,
        eips: used_eip,
    } = claims;
    let current_eip = |s: &YusurService| {
        s.status
            .as_ref()
            .and_then(|st| st.eip.as_deref())
            .and_then(|i| i.parse::<Ipv4Addr>().ok())
    };
    // Services that already hold an address keep it: claim those first, oldest first;
    // what a status shows before what was handed out and not yet written. A pending
    // address is seen by no client and moves for free, but a status one does: a standby's
    // pending addresses are its own guesses, and one older service's guess had taken a
    // newer one's status address from it (10k: thousands of moves planned per standby).
    let mut order: Vec<&Arc<YusurService>> = services.iter().collect();
    order.sort_by_cached_key(|s| {
        (
            s.metadata.creation_timestamp.clone().map(|t| t.0),
            key_of(s.as_ref()),
        )
    });
    for s in &order {
        let k = key_of(s.as_ref());
        if let Some(ip) = spec_vip(s).or_else(|| handed_out(used_vip, &k, status_vip(s), None)) {
            used_vip.entry(ip).or_insert(k.clone());
        }
        if let Some(ip) = handed_out(used_eip, &k, current_eip(s), None) {
            used_eip.entry(ip).or_insert(k);
        }
    }
    for s in &order {
        let k = key_of(s.as_ref());
        if spec_vip(s).is_none()
            && let Some(ip) = handed_vip(used_vip, s, &k, pending)
        {
            used_vip.entry(ip).or_insert(k.clone());
        }
        if let Some(ip) = handed_out(used_eip, &k, current_eip(s), pending.eips.get(&k).copied()) {
            used_eip.entry(ip).or_insert(k);
        }
    }
    let mut out = BTreeMap::new();
    for s in order {
        let k = key_of(s.as_ref());
        let asked = spec_vip(s);
        let want = asked.or_else(|| handed_vip(used_vip, s, &k, pending));
        if asked.is_none() && want.is_none() {
            // Whatever it was handed out that another holds now is dropped: pick again.
            pending.cluster_ips.remove(&k);
        }
        let shown = status_vip(s);
        // Once, when it moves (its status says the old one until rewritten).
        let moved_before = pending
            .cluster_ips
            .get(&k)
            .is_some_and(|p| Some(*p) == want);
        if let (None, Some(ip), false) = (asked, shown, moved_before)
            && want != shown
        {
            pending.moved.push(Moved {
                service: k.clone(),
                kind: "clusterIP",
                address: ip,
                holder: used_vip.get(&ip).cloned(),
            });
        }
        let vip = match want {
            Some(ip) if used_vip.get(&ip) != Some(&k) => {
                out.insert(
                    k.clone(),
                    Err(Problem::ClusterIpConflict {
                        ip,
                        holder: used_vip[&ip].clone(),
                    }),
                );
                continue;
            }
            Some(ip) if !pools.cluster_ips.contains(ip) => {
                out.insert(k.clone(), Err(Problem::ClusterIpOutOfRange(ip)));
                continue;
            }
            Some(ip) => ip,
            None => {
                match pools
                    .cluster_ips
                    .allocate_where(|ip| used_vip.contains_key(ip))
                {
                    Ok(ip) => {
                        used_vip.insert(ip, k.clone());
                        pending.cluster_ips.insert(k.clone(), ip);
                        ip
                    }
                    Err(e) => {
                        out.insert(k.clone(), Err(Problem::ClusterIpExhausted(e.to_string())));
                        continue;
                    }
                }
            }
        };
        if s.spec.type_ != ServiceType::LoadBalancer {
            out.insert(k, Ok((vip, None)));
            continue;
        }
        let Some(pool) = &pools.eips else {
            out.insert(k, Err(Problem::NoEipPool));
            continue;
        };
        let requested: Option<Result<Ipv4Addr, Problem>> =
            s.spec.eip.as_ref().map(|e| match e.parse::<Ipv4Addr>() {
                Ok(ip) => Ok(ip),
                Err(_) => eips
                    .get(e)
                    .copied()
                    .ok_or_else(|| Problem::EipNotFound(e.clone())),
            });
        let held = handed_out(used_eip, &k, current_eip(s), pending.eips.get(&k).copied());
        if held.is_none() {
            pending.eips.remove(&k);
        }
        let moved_before = pending.eips.get(&k).is_some_and(|p| Some(*p) == held);
        if let (None, Some(ip), false) = (&requested, current_eip(s), moved_before)
            && held != Some(ip)
        {
            pending.moved.push(Moved {
                service: k.clone(),
                kind: "EIP",
                address: ip,
                holder: used_eip.get(&ip).cloned(),
            });
        }
        let eip = match requested {
            Some(Err(p)) => {
                out.insert(k, Err(p));
                continue;
            }
            Some(Ok(ip)) if !pool.contains(ip) => {
                out.insert(k, Err(Problem::EipOutOfPool(ip)));
                continue;
            }
            Some(Ok(ip)) if used_eip.get(&ip).is_some_and(|o| o != &k) => {
                out.insert(
                    k,
                    Err(Problem::EipConflict {
                        ip,
                        holder: used_eip[&ip].clone(),
                    }),
                );
                continue;
            }
            Some(Ok(ip)) => ip,
            None => match held {
                Some(ip) => ip,
                None => match pool.allocate_where(|ip| used_eip.contains_key(ip)) {
                    Ok(ip) => {
                        used_eip.insert(ip, k.clone());
                        pending.eips.insert(k.clone(), ip);
                        ip
                    }
                    Err(e) => {
                        out.insert(k, Err(Problem::EipExhausted(e.to_string())));
                        continue;
                    }
                },
            },
        };
        used_eip.insert(eip, k.clone());
        out.insert(k, Ok((vip, Some(eip))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn svc(name: &str, ip: Option<&str>, created: i64) -> Arc<YusurService> {
        let mut s = YusurService::new(
            name,
            serde_json::from_value(json!({"ports": [{"port": 80}], "clusterIP": ip})).unwrap(),
        );
        s.metadata.namespace = Some("default".into());
        s.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        Arc::new(s)
    }

    #[test]
    fn cluster_ips_are_unique_and_a_fixed_ip_clash_is_reported() {
        let pools = ServicePools {
            cluster_ips: Pool::subnet("10.96.0.0/16", None, &[]).unwrap(),
            eips: None,
        };
        let services = vec![
            svc("a", Some("10.96.0.50"), 1),
            svc("b", Some("10.96.0.50"), 2),
            svc("c", None, 3),
            svc("d", None, 4),
        ];
        let mut pending = Pending::default();
        let out = service_addresses(
            &services,
            &pools,
            &BTreeMap::new(),
            &mut pending,
            &mut Claims::default(),
        );
        assert_eq!(out["default/a"], Ok(("10.96.0.50".parse().unwrap(), None)));
        assert_eq!(
            out["default/b"],
            Err(Problem::ClusterIpConflict {
                ip: "10.96.0.50".parse().unwrap(),
                holder: "default/a".into()
            })
        );
        let (c, d) = (
            out["default/c"].clone().unwrap().0,
            out["default/d"].clone().unwrap().0,
        );
        assert_ne!(c, d);
        // A second pass (cache not yet updated) hands out the same addresses again.
        let again = service_addresses(
            &services,
            &pools,
            &BTreeMap::new(),
            &mut pending,
            &mut Claims::default(),
        );
        assert_eq!(again["default/c"].clone().unwrap().0, c);
    }

    /// Two leaders around a handover handed 10.96.0.5 and one EIP to two services created in
    /// the same second (as a 10k run with a leadership flap did, 17 times): the first by
    /// key keeps them, the other gets new ones instead of a conflict for good, and keeps
    /// those while its status still shows the old ones.
    /// A standby plans with its own guesses as pending addresses; the leader's statuses
    /// then show other services at those addresses. The status wins, whatever the ages:
    /// an older service's guess took a newer one's status address from it, and a standby
    /// that won would have moved an address clients use.
    #[test]
    fn a_status_address_beats_one_handed_out_and_not_yet_written() {
        let pools = ServicePools {
            cluster_ips: Pool::subnet("10.96.0.0/24", None, &[]).unwrap(),
            eips: None,
        };
        let older = svc("older", None, 7);
        let mut newer = (*svc("newer", None, 8)).clone();
        newer.status = Some(serde_json::from_value(json!({"clusterIP": "10.96.0.2"})).unwrap());
        let services = vec![older, Arc::new(newer)];
        let mut pending = Pending::default();
        // The older service was given 10.96.0.2 here, before the newer's status arrived.
        let guess = service_addresses(
            &services[..1],
            &pools,
            &BTreeMap::new(),
            &mut pending,
            &mut Claims::default(),
        );
        assert_eq!(
            guess["default/older"],
            Ok(("10.96.0.2".parse().unwrap(), None))
        );
        let out = service_addresses(
            &services,
            &pools,
            &BTreeMap::new(),
            &mut pending,
            &mut Claims::default(),
        );
        assert_eq!(
            out["default/newer"],
            Ok(("10.96.0.2".parse().unwrap(), None))
        );
        let moved = out["default/older"].clone().expect("the guess moves").0;
        assert_ne!(moved, "10.96.0.2".parse::<Ipv4Addr>().unwrap());
    }

    #[test]
    fn an_address_handed_out_twice_moves_the_second_holder() {
        let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
        let pools = ServicePools {
            cluster_ips: Pool::subnet("10.96.0.0/24", None, &[]).unwrap(),
            eips: Some(Pool::subnet("198.18.0.0/24", None, &[]).unwrap()),
        };
        let held = |name: &str| {
            let mut s = (*svc(name, None, 7)).clone();
            s.spec.type_ = ServiceType::LoadBalancer;
            s.status = Some(
                serde_json::from_value(json!({"clusterIP": "10.96.0.5", "eip": "198.18.0.9"}))
                    .unwrap(),
            );
            Arc::new(s)
        };
        let services = vec![held("s11"), held("s100"), svc("other", None, 8)];
        let mut pending = Pending::default();
        let mut claims = Claims::default();
        let out = service_addresses(
            &services,
            &pools,
            &BTreeMap::new(),
            &mut pending,
            &mut claims,
        );
        assert_eq!(
            out["default/s100"],
            Ok((ip("10.96.0.5"), Some(ip("198.18.0.9"))))
        );
        let (vip, eip) = out["default/s11"].clone().expect("s11 moves, no conflict");
        let other = out["default/other"].clone().unwrap().0;
        let eip = eip.expect("an EIP");
        assert!(vip != ip("10.96.0.5") && vip != other, "{vip} {other}");
        assert_ne!(eip, ip("198.18.0.9"));
        let moved = |kind, address: &str| Moved {
            service: "default/s11".into(),
            kind,
            address: ip(address),
            holder: Some("default/s100".into()),
        };
        assert_eq!(
            pending.take_moved(),
            [moved("clusterIP", "10.96.0.5"), moved("EIP", "198.18.0.9")]
        );
        // The next pass over s11 alone, its status not yet rewritten: the same new
        // addresses, nothing handed out or moved again.
        let before = pending.clone();
        let again = service_addresses(
            &services[..1],
            &pools,
            &BTreeMap::new(),
            &mut pending,
            &mut claims,
        );
        assert_eq!(again["default/s11"], Ok((vip, Some(eip))));
        assert!(pending.handed_out_since(&before).is_empty());
        assert_eq!(pending.take_moved(), []);
        // A clusterIP asked for in the spec is still reported, not moved.
        let mut asked = (*held("s12")).clone();
        asked.spec.cluster_ip = Some("10.96.0.5".into());
        let out = service_addresses(
            &[Arc::new(asked)],
            &pools,
            &BTreeMap::new(),
            &mut pending,
            &mut claims,
        );
        assert!(matches!(
            out["default/s12"],
            Err(Problem::ClusterIpConflict { .. })
        ));
    }

    #[test]
    fn an_ordinary_services_cluster_ip_is_never_given_to_a_yusurservice() {
        let pools = ServicePools {
            cluster_ips: Pool::subnet("10.96.0.0/29", None, &[]).unwrap(),
            eips: None,
        };
        let mut claims = Claims::default();
        claims.claim_vip("10.96.0.2".parse().unwrap(), "svc/default/web");
        let services = vec![svc("wants", Some("10.96.0.2"), 1), svc("any", None, 2)];
        let out = service_addresses(
            &services,
            &pools,
            &BTreeMap::new(),
            &mut Pending::default(),
            &mut claims,
        );
        assert_eq!(
            out["default/wants"],
            Err(Problem::ClusterIpConflict {
                ip: "10.96.0.2".parse().unwrap(),
                holder: "svc/default/web".into()
            })
        );
        assert_eq!(out["default/any"], Ok(("10.96.0.3".parse().unwrap(), None)));
    }

    /// What a plan handed out: a new ClusterIP, a new EIP, or a changed one; a service
    /// that kept both of its addresses is not named.
    #[test]
    fn handed_out_since_names_new_and_changed_addresses_only() {
        let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
        let mut before = Pending::default();
        before
            .cluster_ips
            .insert("default/kept".into(), ip("10.96.0.1"));
        before
            .cluster_ips
            .insert("default/moved".into(), ip("10.96.0.2"));
        before
            .cluster_ips
            .insert("default/same".into(), ip("10.96.0.3"));
        before
            .eips
            .insert("default/same".into(), ip("198.18.0.101"));
        let mut now = before.clone();
        now.cluster_ips
            .insert("default/moved".into(), ip("10.96.0.5"));
        now.cluster_ips
            .insert("default/new".into(), ip("10.96.0.6"));
        now.eips.insert("default/kept".into(), ip("198.18.0.100"));
        assert_eq!(
            now.handed_out_since(&before),
            ["default/kept", "default/moved", "default/new"]
                .map(String::from)
                .into()
        );
        assert!(before.handed_out_since(&before).is_empty());
    }

    /// A full plan made off the loop gave `x` (new to it) the address the loop had
    /// meanwhile given `z`, and written into z's status: taken in, x is planned again and
    /// gets another one; z keeps its own.
    #[test]
    fn a_full_plan_taken_in_never_gives_an_address_the_loop_handed_out() {
        let pools = ServicePools {
            cluster_ips: Pool::subnet("10.96.0.0/29", None, &[]).unwrap(),
            eips: None,
        };
        let before = Pending::default();
        // Off the loop: x, with nothing pending, gets the first free address.
        let mut off = before.clone();
        let mut off_claims = Claims::default();
        let planned = service_addresses(
            &[svc("x", None, 1)],
            &pools,
            &BTreeMap::new(),
            &mut off,
            &mut off_claims,
        );
        let a = planned["default/x"].clone().unwrap().0;
        // The loop, meanwhile: z (created later, not yet seen by the plan) gets the same
        // one, written to its status.
        let mut pending = before.clone();
        let mut claims = Claims::default();
        let z_first = service_addresses(
            &[svc("z", None, 2)],
            &pools,
            &BTreeMap::new(),
            &mut pending,
            &mut claims,
        );
        assert_eq!(z_first["default/z"].clone().unwrap().0, a);
        // Taken in: z stays as the loop planned it (its claim is the loop's), x is
        // planned again.
        let touched: BTreeSet<String> = ["default/z".to_string()].into();
        let (mut merged, again) = off_claims.taken_in(&off, &before, touched.clone());
        assert_eq!(
            again,
            ["default/x".to_string(), "default/z".to_string()].into()
        );
        merged.absorb(&claims, &touched);
        let out = service_addresses(
            &[svc("x", None, 1)],
            &pools,
            &BTreeMap::new(),
            &mut pending,
            &mut merged,
        );
        let x = out["default/x"].clone().unwrap().0;
        assert_ne!(x, a, "x must not be given z's address");
        assert_eq!(merged.vips.get(&a), Some(&"default/z".to_string()));
    }

    #[test]
    fn a_pending_cluster_ip_another_holder_took_meanwhile_is_picked_again() {
        let pools = ServicePools {
            cluster_ips: Pool::subnet("10.96.0.0/29", None, &[]).unwrap(),
            eips: None,
        };
        let services = vec![svc("a", None, 1)];
        let mut pending = Pending::default();
        let first = service_addresses(
            &services,
            &pools,
            &BTreeMap::new(),
            &mut pending,
            &mut Claims::default(),
        );
        let x = first["default/a"].clone().unwrap().0;
        // Before a's status is written, an ordinary Service is given x.
        let mut claims = Claims::default();
        claims.claim_vip(x, "svc/default/web");
        let again = service_addresses(
            &services,
            &pools,
            &BTreeMap::new(),
            &mut pending,
            &mut claims,
        );
        let y = again["default/a"].clone().unwrap().0;
        assert_ne!(x, y);
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use proptest::prelude::*;

    /// A service whose status may already hold a ClusterIP and an EIP, handed out by some
    /// earlier leader (two services may show the same ones, as after a handover).
    fn service(
        i: usize,
        created: i64,
        lb: bool,
        vip: Option<u8>,
        eip: Option<u8>,
    ) -> Arc<YusurService> {
        let mut s = YusurService::new(
            &format!("s{i}"),
            serde_json::from_value(serde_json::json!({"ports": [{"port": 80}]})).unwrap(),
        );
        s.metadata.namespace = Some("default".into());
        s.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(created).unwrap(),
        ));
        if lb {
            s.spec.type_ = ServiceType::LoadBalancer;
        }
        s.status = Some(
            serde_json::from_value(serde_json::json!({
                "clusterIP": vip.map(|v| format!("10.96.0.{v}")),
                "eip": eip.map(|v| format!("198.18.0.{v}")),
            }))
            .unwrap(),
        );
        Arc::new(s)
    }

    proptest! {
        /// Whatever the statuses show and however passes split the services, the addresses
        /// in force (each service's latest outcome) are never held twice, and no service
        /// reports a conflict over an address it was handed out.
        #[test]
        fn no_service_address_is_held_twice(
            shapes in proptest::collection::vec(
                (0i64..3, any::<bool>(), proptest::option::of(2u8..6), proptest::option::of(2u8..6)), 1..10),
            passes in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 10), 1..6),
        ) {
            let services: Vec<_> = shapes
                .iter()
                .enumerate()
                .map(|(i, (c, lb, v, e))| service(i, *c, *lb, *v, *e))
                .collect();
            let pools = ServicePools {
                cluster_ips: Pool::subnet("10.96.0.0/24", None, &[]).unwrap(),
                eips: Some(Pool::subnet("198.18.0.0/24", None, &[]).unwrap()),
            };
            let (mut pending, mut claims) = (Pending::default(), Claims::default());
            let mut latest: BTreeMap<String, AddressOutcome> = BTreeMap::new();
            for pick in passes {
                let these: Vec<_> = services
                    .iter()
                    .zip(pick)
                    .filter(|(_, p)| *p)
                    .map(|(s, _)| s.clone())
                    .collect();
                claims.release(&these.iter().map(|s| key_of(s)).collect());
                let out = service_addresses(&these, &pools, &BTreeMap::new(), &mut pending, &mut claims);
                latest.extend(out);
                let (mut vips, mut eips) = (BTreeMap::new(), BTreeMap::new());
                for (k, o) in &latest {
                    let (vip, eip) = o.clone().map_err(|p| TestCaseError::fail(format!("{k}: {p:?}")))?;
                    if let Some(other) = vips.insert(vip, k) {
                        prop_assert!(false, "{vip} held by {other} and {k}");
                    }
                    if let Some(e) = eip
                        && let Some(other) = eips.insert(e, k)
                    {
                        prop_assert!(false, "{e} held by {other} and {k}");
                    }
                }
            }
        }
    }
}
