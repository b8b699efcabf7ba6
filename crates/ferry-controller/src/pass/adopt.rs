//! Taking in a full pass planned off the pass loop (`crate::full_plan`): what the loop
//! planned meanwhile stands, every other service takes the full plan's outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use ferry_net::ServiceState;

use super::{Pass, PassState, Planned, StatusPatch, heavy, writes};
use crate::caches::Caches;
use crate::changes::Changes;
use crate::network::Network;
use crate::service_ips;
use crate::writer::Writes;

impl Planned {
    /// Leaves what the loop planned since this plan's snapshot (`touched`) as the loop
    /// has it: their NB states from `net`, no outcome (their statuses were written).
    pub(super) fn keep_loop(
        &mut self,
        touched: &BTreeSet<String>,
        net: &BTreeMap<String, ServiceState>,
    ) {
        self.outcomes.retain(|o| !touched.contains(&o.key));
        self.states.retain(|k, _| !touched.contains(k));
        self.states.extend(
            touched
                .iter()
                .filter_map(|k| Some((k.clone(), net.get(k)?.clone()))),
        );
        self.kube.retain(|k, _| !touched.contains(k));
        self.lb_ips.retain(|k, _| !touched.contains(k));
    }

    /// Replaces what `newer` planned again (a full plan made off the pass loop, and the
    /// services the loop planned meanwhile): its services' outcomes and states, its
    /// ordinary Services, its port changes.
    pub(super) fn overlay(&mut self, newer: Planned) {
        let again = newer.only.unwrap_or_default();
        self.outcomes.retain(|o| !again.contains(&o.key));
        self.outcomes.extend(newer.outcomes);
        self.states.retain(|k, _| !again.contains(k));
        self.states.extend(newer.states);
        self.kube.extend(newer.kube);
        self.lb_ips.extend(newer.lb_ips);
        self.ports = newer.ports;
        self.seen = (
            crate::changes::earliest(self.seen.0, newer.seen.0),
            crate::changes::earliest(self.seen.1, newer.seen.1),
        );
    }
}

/// A leader's full pass planned off the pass loop (`crate::full_plan`): the state it
/// rebuilt (`PassState::for_full_shadow`, planned as a standby would, writing nothing),
/// the service addresses pending when it started, and its plan.
pub(crate) struct FullPlan {
    pub state: PassState,
    pub pending_before: service_ips::Pending,
    pub planned: Planned,
    /// Services whose backends moved in what was replayed on its index.
    pub moved: BTreeSet<String>,
    /// A workload, node or probe port lacks an address: the loop allocates.
    pub needs_address: bool,
    /// The network objects' statuses to write.
    pub statuses: Vec<StatusPatch>,
}

impl FullPlan {
    /// Replays on its index what the loop planned since its snapshot (level-triggered:
    /// the caches are read again), noting which services' backends moved.
    pub(crate) fn replay(&mut self, c: &Caches, since: &Changes) {
        let u = self.state.index.update(c, since);
        self.moved.extend(u.services);
        self.needs_address |= u.needs_address;
    }
}

impl Pass<'_> {
    /// Takes in a full pass planned off the loop. The loop kept planning meanwhile, and
    /// what it planned stands: those services (`PassState::planned_since`) keep the loop's
    /// NB states, statuses and claims; every other service takes the full plan's. Its
    /// index replaces the loop's once `since` (the changes the loop planned meanwhile) is
    /// replayed on it. Services the plan gave new addresses (only the loop hands them out)
    /// or whose backends moved since its snapshot are planned again here. The whole is
    /// then sent and written as a full pass.
    pub(crate) async fn adopt(
        &self,
        done: FullPlan,
        since: Changes,
        st: &mut PassState,
        net: Option<&mut Network>,
        writes: &Writes,
    ) {
        let touched = st.planned_since.take().unwrap_or_default();
        let t = Instant::now();
        // What the loop planned after the plan's own replay (its port changes were sent
        // by the loop's passes).
        let mut done = done;
        heavy(|| done.replay(self.c, &since));
        let replay_ms = t.elapsed().as_millis() as u64;
        let FullPlan {
            state,
            pending_before,
            mut planned,
            moved,
            needs_address,
            statuses,
        } = done;
        st.index = state.index;
        let (mut claims, again) =
            state
                .claims
                .taken_in(&state.service_pending, &pending_before, touched.clone());
        claims.absorb(&st.claims, &touched);
        st.claims = claims;
        let replan: BTreeSet<String> = again
            .into_iter()
            .chain(moved)
            .filter(|k| !touched.contains(k))
            .collect();
        let (kept_from_loop, planned_again) = (touched.len(), replan.len());
        let planned_ms = planned.started.elapsed().as_millis() as u64;
        planned.keep_loop(&touched, &st.net);
        let replan = Changes {
            services: replan,
            ..Default::default()
        };
        let t = Instant::now();
        if needs_address {
            self.allocate(st).await;
            self.write_network_statuses().await;
        } else {
            writes::write_status_patches(self.client, statuses).await;
        }
        if let Some(again) = self.plan(replan, st).await {
            planned.overlay(again);
        }
        tracing::info!(
            kept_from_loop,
            planned_again,
            planned_ms,
            replay_ms,
            replan_ms = t.elapsed().as_millis() as u64,
            "full pass planned off the loop taken in"
        );
        planned.only = None;
        planned.full = true;
        self.finish(planned, st, net, writes).await;
    }
}
