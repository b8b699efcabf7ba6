//! What the NB must do after a pass, pure: which services' load balancers and which
//! workload ports changed (the fast paths), or that everything must converge. Work a failed
//! transaction left undone is carried into the next pass and merged with its own.

use std::collections::{BTreeMap, BTreeSet};

use ferry_net::ServiceState;

use crate::net_model;
use crate::plan::ServiceOutcome;

/// A workload port's change: (state the NB may hold, state wanted).
pub use ferry_nb::PortChange;

/// NB work for this pass.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NbWork {
    /// Converge everything.
    pub full: bool,
    /// Workload ports by name.
    pub ports: BTreeMap<String, PortChange>,
    /// Services whose load balancers to converge, and the owners of their rows (old
    /// owners of removed or re-created services included).
    pub services: BTreeSet<String>,
    pub owners: BTreeSet<String>,
}

impl NbWork {
    pub fn is_empty(&self) -> bool {
        !self.full && self.ports.is_empty() && self.owners.is_empty()
    }
}

/// The NB states of planned YusurServices that can be programmed, by key.
pub fn states_of(outcomes: &[ServiceOutcome]) -> BTreeMap<String, ServiceState> {
    outcomes
        .iter()
        .filter_map(|o| Some((o.key.clone(), net_model::service_state(o)?)))
        .collect()
}

/// Adds this pass's work to `work` (what is left from earlier passes). `states` are the NB
/// states this pass planned; `net` (what the NB should hold per service) becomes them in a
/// full pass (`only` is `None`), else changes for the keys in `only` (a key without a
/// state is a service to remove).
pub fn add_pass(
    work: &mut NbWork,
    net: &mut BTreeMap<String, ServiceState>,
    states: BTreeMap<String, ServiceState>,
    only: Option<&BTreeSet<String>>,
    ports: Vec<PortChange>,
) {
    match only {
        None => {
            work.full = true;
            *net = states;
        }
        Some(keys) => {
            let mut now = states;
            for k in keys {
                let new = now.remove(k);
                if net.get(k) == new.as_ref() {
                    continue;
                }
                work.owners
                    .extend(new.iter().map(ferry_net::scenario::service_owner));
                let old = match new {
                    Some(st) => {
                        work.services.insert(k.clone());
                        net.insert(k.clone(), st)
                    }
                    None => net.remove(k),
                };
                work.owners
                    .extend(old.iter().map(ferry_net::scenario::service_owner));
            }
        }
    }
    for (old, new) in ports {
        if let Some(name) = new.as_ref().or(old.as_ref()).map(|p| p.name.clone()) {
            work.ports
                .entry(name)
                .and_modify(|e| e.1 = new.clone())
                .or_insert((old, new));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::ServiceOutcome;
    use ferry_api::YusurService;
    use ferry_net::PortState;
    use std::sync::Arc;

    /// A programmable ClusterIP service's outcome with no backends (also `pass`'s tests).
    pub(crate) fn outcome(name: &str, vip: &str) -> ServiceOutcome {
        let svc: YusurService = serde_json::from_value(serde_json::json!({
            "apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")},
            "spec": {"ports": [{"port": 80}]}}))
        .unwrap();
        ServiceOutcome {
            key: format!("default/{name}"),
            service: Arc::new(svc),
            cluster_ip: Some(vip.parse().unwrap()),
            eip: None,
            ready: vec![],
            problem: None,
            selected: vec![],
            phases: Default::default(),
            existing_probes: vec![],
        }
    }

    fn port(name: &str, ip: &str) -> PortState {
        PortState {
            name: name.into(),
            subnet: "s1".into(),
            mac: "0a:00:00:00:00:01".into(),
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn a_full_pass_replaces_what_the_nb_should_hold() {
        let (mut work, mut net) = (NbWork::default(), BTreeMap::new());
        add_pass(
            &mut work,
            &mut net,
            states_of(&[outcome("a", "10.96.0.1")]),
            None,
            vec![],
        );
        assert!(work.full);
        assert_eq!(net.keys().collect::<Vec<_>>(), ["default/a"]);
    }

    #[test]
    fn an_unchanged_service_is_no_work_and_a_changed_one_names_its_owner() {
        let (mut work, mut net) = (NbWork::default(), BTreeMap::new());
        add_pass(
            &mut work,
            &mut net,
            states_of(&[outcome("a", "10.96.0.1")]),
            None,
            vec![],
        );
        let only = BTreeSet::from(["default/a".to_string()]);
        let mut next = NbWork::default();
        add_pass(
            &mut next,
            &mut net,
            states_of(&[outcome("a", "10.96.0.1")]),
            Some(&only),
            vec![],
        );
        assert!(next.is_empty());
        add_pass(
            &mut next,
            &mut net,
            states_of(&[outcome("a", "10.96.0.2")]),
            Some(&only),
            vec![],
        );
        assert_eq!(next.services, BTreeSet::from(["default/a".to_string()]));
        assert_eq!(next.owners.len(), 1, "{:?}", next.owners);
        assert!(!next.full);
    }

    #[test]
    fn a_deleted_service_leaves_only_its_owner_to_clean() {
        let (mut work, mut net) = (NbWork::default(), BTreeMap::new());
        add_pass(
            &mut work,
            &mut net,
            states_of(&[outcome("a", "10.96.0.1")]),
            None,
            vec![],
        );
        let only = BTreeSet::from(["default/a".to_string()]);
        let mut next = NbWork::default();
        add_pass(&mut next, &mut net, BTreeMap::new(), Some(&only), vec![]);
        assert!(next.services.is_empty() && next.owners.len() == 1);
        assert!(net.is_empty());
    }

    #[test]
    fn port_changes_of_one_port_merge_keeping_the_oldest_nb_state() {
        let mut work = NbWork::default();
        let mut net = BTreeMap::new();
        let (p1, p2) = (port("p", "10.0.0.2"), port("p", "10.0.0.3"));
        add_pass(
            &mut work,
            &mut net,
            BTreeMap::new(),
            Some(&BTreeSet::new()),
            vec![(None, Some(p1.clone()))],
        );
        add_pass(
            &mut work,
            &mut net,
            BTreeMap::new(),
            Some(&BTreeSet::new()),
            vec![(Some(p1), Some(p2.clone()))],
        );
        assert_eq!(work.ports["p"], (None, Some(p2)));
    }
}
