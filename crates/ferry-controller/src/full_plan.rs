//! Full passes planned off the pass loop. A full pass rebuilds the indexes and plans every
//! service: 5-15 s of CPU at 10,000 services x 20. It runs on a blocking-pool thread from
//! an empty state (`PassState::for_full_shadow`), planned as a standby plans (writing
//! nothing), while the loop goes on:
//! - a standby's is abandoned when it wins (the loop selects it against the win);
//! - a warm leader's ([`Background`]) runs while the loop's incremental passes keep
//!   programming changes. Once planned, it replays on its index what the loop planned
//!   meanwhile and works out the address and status work, still off the loop; then the
//!   loop takes it in (`pass::Pass::adopt`). Only the loop hands out addresses and writes.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube::Client;
use tokio::sync::{mpsc, oneshot};

use crate::caches::Caches;
use crate::changes::Changes;
use crate::pass::{FullPlan, Pass, PassState};
use crate::service_ips::ServicePools;

/// What a full pass planned off the loop needs, owned.
#[derive(Clone)]
pub(crate) struct OffLoop {
    pub client: Client,
    pub c: Caches,
    pub pools: ServicePools,
    pub eip_range: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    pub cluster_dns: Option<std::net::Ipv4Addr>,
}

/// Plans `changes` (a full pass) on `st` (`PassState::for_full_shadow`) on a blocking-pool
/// thread; `None` if it failed. For a leader, `since` collects what the loop plans
/// meanwhile: replayed here once planned (`FullPlan::moved`). Dropping the returned future
/// stops the pass at its next step (`pass` yields between steps) and drops what it
/// built. At 10k a full pass held an async worker for ~30 s: a standby that won meanwhile
/// noticed it 10 s late.
pub(crate) async fn plan(
    s: OffLoop,
    changes: Changes,
    mut st: PassState,
    since: Option<Arc<Mutex<Changes>>>,
) -> Option<FullPlan> {
    let (stop, stopped) = oneshot::channel::<()>();
    // Sends on drop: the pass ends when this future is dropped.
    let _stop = stop;
    let handle = tokio::runtime::Handle::current();
    let pending_before = st.service_pending.clone();
    let task = tokio::task::spawn_blocking(move || {
        let p = Pass {
            client: &s.client,
            c: &s.c,
            pools: &s.pools,
            eip_range: s.eip_range,
            cluster_dns: s.cluster_dns,
            shadow: true,
            beside: None,
        };
        let planned = handle.block_on(async {
            tokio::select! {
                planned = p.plan(changes, &mut st) => planned,
                _ = stopped => None,
            }
        })?;
        let mut done = FullPlan {
            state: st,
            pending_before,
            planned,
            moved: Default::default(),
            needs_address: false,
            statuses: Vec::new(),
        };
        if let Some(since) = since {
            done.replay(&s.c, &Changes::take(&since));
            let (held, requests) = crate::caches::address_book(&s.c);
            done.needs_address |= !requests.is_empty();
            done.statuses = crate::pass::status_patches(&s.c, &held);
        }
        Some(done)
    });
    match task.await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = %e, "a full pass planned off the loop failed");
            None
        }
    }
}

/// A leader's full pass being planned off the loop, and what the loop planned since it
/// started (planned again on the full pass's state when it is taken in). Dropping it (a
/// lost leadership) stops the planning.
pub(crate) struct Background {
    task: tokio::task::JoinHandle<()>,
    done: oneshot::Receiver<Option<FullPlan>>,
    since: Arc<Mutex<Changes>>,
    pub started: Instant,
}

impl Background {
    /// Starts planning the full pass `changes` from `st`; `wake` is the pass driver's,
    /// told when the plan is ready.
    pub fn start(s: OffLoop, changes: Changes, st: &PassState, wake: mpsc::Sender<()>) -> Self {
        let (tx, done) = oneshot::channel();
        let fresh = st.for_full_shadow();
        let since = Arc::new(Mutex::new(Changes::default()));
        let replay = since.clone();
        let task = tokio::spawn(async move {
            let _ = tx.send(plan(s, changes, fresh, Some(replay)).await);
            let _ = wake.try_send(());
        });
        Background {
            task,
            done,
            since,
            started: Instant::now(),
        }
    }

    /// Records changes the loop plans meanwhile.
    pub fn record(&self, changes: &Changes) {
        if let Ok(mut since) = self.since.lock() {
            since.merge(changes.clone());
        }
    }

    /// What the loop planned since the plan replayed what it had.
    pub fn take_since(&self) -> Changes {
        Changes::take(&self.since)
    }

    /// The plan once it is ready (`Some(None)`: it failed), without waiting.
    pub fn take_done(&mut self) -> Option<Option<FullPlan>> {
        match self.done.try_recv() {
            Ok(done) => Some(done),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(None),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.task.abort();
    }
}
