//! `ferry-nb` is Ferry's one OVN Northbound applier (what `EnsureLBs` is to
//! ovn-kubernetes): given the rows Ferry wants (`ferry_net::build_desired`), it reads what
//! the NB holds from the client's monitor mirror (an index of every row, [`indexed_rows`],
//! and each row it compares whole), diffs (`ferry_net::diff_fenced_with`), sends the
//! bounded transactions in order, reads again and reports what it did ([`Applied`]). It
//! also owns the fast paths a controller takes when it knows what changed: the load
//! balancers of a few services ([`Applier::ensure_services`]) and a few workload ports
//! ([`Applier::ensure_ports`]).
//!
//! Every NB writer of Ferry goes through it: the network controller
//! (`ferry-controller`'s `network` module), the data-plane bench (`ferry-bench`'s
//! `dataplane::ovn`), `ferry-net`'s real-NB tests and its `nb_scale` example, and
//! `ferry-agent`'s `node_iface_ovn` test; so the bench and the tests measure and check the
//! controller's own code. The one exception is on purpose: `ferry-net`'s `tests/ovn.rs`
//! sends `diff`'s transactions with `ovsdb-client`, to check them against a writer and rows
//! that are not Ferry's.
//!
//! A full convergence can also run beside the fast paths ([`Applier::ensure_fenced`], from a
//! snapshot older than what the fast paths write meanwhile): the applier records what each
//! fast path wrote since [`Applier::fence_from_now`] and the convergence leaves those rows
//! as the NB has them (`ferry_net::diff_fenced`). One sender at a time: a fast path holds
//! the applier's send lock from its mirror read to its last transaction, the convergence
//! takes it per transaction and re-plans when a fast path wrote since its plan.
//!
//! Why a crate of its own: the decisions (which rows, which operations) are `ferry-net`'s
//! and stay pure, without tokio; the client is `ferry-ovsdb`'s and knows nothing of
//! Ferry's model. The applier needs both plus a runtime (the diff of a large NB runs on a
//! blocking thread), so it sits above the two; putting it in `ferry-ovsdb` would make the
//! generic client depend on Ferry's model. `ferry-net`'s tests and examples dev-depend on
//! it (a dev-dependency cycle cargo allows). It must not decide what the NB should hold;
//! it writes what it is given and touches only what `ferry_net::diff` plans (rows Ferry
//! owns).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_net::{CurrentRow, Desired, Fence, NetworkState, PortState, ServiceState};
use ferry_ovsdb::{Client, Mirror, nb};
use serde_json::Value;
use tracing::Instrument;

/// Workload ports written per fast-path transaction at most.
pub const PORTS_PER_TXN: usize = 1000;

/// Diffs sent per [`Applier::ensure`] at most: the first plan normally converges; a second
/// covers rows another writer moved meanwhile; past that the caller's next pass retries.
pub const MAX_ROUNDS: usize = 3;

/// Plans of [`Applier::ensure_fenced`] cut short by a fast path before it plans with the
/// send lock held: fast paths then wait for one diff (seconds at 10,000 services), but a
/// stream of them cannot keep the convergence from ever sending.
pub const FENCED_TRIES: usize = 2;

/// Errors of an apply.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A transaction failed (refused, or the connection was lost): `sent` transactions of
    /// this apply had committed before it. Those stand on their own; the next apply
    /// re-reads the NB and sends what is still missing.
    #[error("NB transaction failed after {sent} committed: {source}")]
    Transact {
        sent: usize,
        #[source]
        source: ferry_ovsdb::Error,
    },
    /// Building or diffing on the blocking pool failed (the task panicked or was
    /// cancelled).
    #[error("planning the NB rows failed: {0}")]
    Plan(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A workload port's change: (state the NB may hold, state wanted).
pub type PortChange = (Option<PortState>, Option<PortState>);

/// Called with each transaction's operations just before it is sent (the `nb_scale`
/// example counts request bytes with it, a test kills the NB after the n-th).
pub type BeforeSend = Arc<dyn Fn(&[Value]) + Send + Sync>;

/// One transaction sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sent {
    pub ops: usize,
    /// Request to reply.
    pub elapsed: Duration,
}

/// One diff: the mirror read, the plan, and the transactions of that plan that were sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Round {
    /// Copying the mirror into [`CurrentRow`]s.
    pub read: Duration,
    /// `ferry_net::diff` (or a fast path's delta).
    pub plan: Duration,
    pub transactions: Vec<Sent>,
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// Every diff computed, the last one included (empty when converged).
    pub rounds: Vec<Round>,
    /// The last diff was empty: the NB holds the desired rows.
    pub converged: bool,
}

impl Applied {
    /// Transactions sent.
    pub fn transactions(&self) -> usize {
        self.rounds.iter().map(|r| r.transactions.len()).sum()
    }

    /// Operations sent.
    pub fn ops(&self) -> usize {
        self.rounds
            .iter()
            .flat_map(|r| &r.transactions)
            .map(|t| t.ops)
            .sum()
    }

    /// Every transaction sent, in order.
    pub fn sent(&self) -> impl Iterator<Item = &Sent> {
        self.rounds.iter().flat_map(|r| &r.transactions)
    }
}

/// Every row of the tables Ferry writes, as `mirror` holds them, in `ferry_net::diff`'s
/// input form.
pub fn current_rows(mirror: &Mirror) -> Vec<CurrentRow> {
    rows_with(mirror, |_, _| true)
}

/// [`current_rows`] with only the columns a diff reads of every row
/// (`ferry_net::indexed_column`): the rest is read row by row, for the rows it compares
/// ([`Applier::ensure`]).
pub fn indexed_rows(mirror: &Mirror) -> Vec<CurrentRow> {
    rows_with(mirror, ferry_net::indexed_column)
}

/// Every row of the tables Ferry writes, with the columns `keep(table, column)` accepts.
fn rows_with(mirror: &Mirror, keep: fn(&str, &str) -> bool) -> Vec<CurrentRow> {
    let mut rows = Vec::new();
    for t in nb::TABLES {
        let Some(table) = mirror.table(t.name) else {
            continue;
        };
        for (uuid, columns) in table.iter_columns(|c| keep(t.name, c)) {
            rows.push(CurrentRow {
                table: t.name.to_string(),
                uuid,
                columns,
            });
        }
    }
    rows
}

/// The applier: an NB client (connected with `ferry_ovsdb::nb::config` or a variant of it,
/// so its mirror holds every table Ferry writes) and the bound on operations per
/// transaction. Clones share the send lock and the fence.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    max_ops: usize,
    before_send: Option<BeforeSend>,
    gate: Arc<Gate>,
}

/// One sender at a time, and what fast paths wrote while a fenced convergence runs.
#[derive(Default)]
struct Gate {
    send: tokio::sync::Mutex<()>,
    log: std::sync::Mutex<FenceLog>,
}

#[derive(Default)]
struct FenceLog {
    /// A fenced convergence runs (or is about to): fast paths record what they write.
    active: bool,
    /// Bumped by each fast path while active.
    generation: u64,
    fence: Fence,
}

impl Gate {
    fn log(&self) -> std::sync::MutexGuard<'_, FenceLog> {
        // A panic while holding it left plain data: use it as it is.
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a fast path's rows, by owner or by key, when a fenced convergence runs.
    fn record(
        &self,
        owners: impl IntoIterator<Item = String>,
        keys: impl IntoIterator<Item = String>,
    ) {
        let mut log = self.log();
        if log.active {
            log.fence.owners.extend(owners);
            log.fence.keys.extend(keys);
            log.generation += 1;
        }
    }

    fn generation(&self) -> u64 {
        self.log().generation
    }
}

/// A fenced convergence's hold on the fence ([`Applier::fence_from_now`]): recording stops
/// and the fence is emptied when it is dropped (the convergence ended or was cancelled).
#[must_use = "the fence records only while this lives"]
pub struct FenceRun {
    gate: Arc<Gate>,
}

impl Drop for FenceRun {
    fn drop(&mut self) {
        let mut log = self.gate.log();
        log.active = false;
        log.fence = Fence::default();
    }
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("max_ops", &self.max_ops)
            .field("before_send", &self.before_send.is_some())
            .finish_non_exhaustive()
    }
}

impl Applier {
    /// `max_ops_per_txn` bounds each transaction of a full convergence (a new ClusterIP
    /// service is one `Load_Balancer` insert, so it is also load balancers per
    /// transaction); on the service fast path it bounds services per transaction.
    pub fn new(client: Client, max_ops_per_txn: usize) -> Applier {
        Applier {
            client,
            max_ops: max_ops_per_txn.max(1),
            before_send: None,
            gate: Arc::default(),
        }
    }

    /// Calls `f` with each transaction's operations before it is sent.
    pub fn before_send(mut self, f: BeforeSend) -> Applier {
        self.before_send = Some(f);
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn max_ops(&self) -> usize {
        self.max_ops
    }

    /// Every row of the tables Ferry writes, from the mirror ([`current_rows`]).
    pub fn current(&self) -> Vec<CurrentRow> {
        self.client.with_mirror(current_rows)
    }

    /// Builds the desired rows of `state` (off the async threads: seconds of CPU for a
    /// large network) and converges the NB to them with [`Applier::ensure`]. The model's
    /// per-object errors are in the returned [`Desired`]; the objects they name are left
    /// out, everything else is written.
    pub async fn ensure_state(&self, state: NetworkState) -> Result<(Arc<Desired>, Applied)> {
        let desired = Arc::new(
            tokio::task::spawn_blocking(move || ferry_net::build_desired(&state))
                .await
                .map_err(|e| Error::Plan(e.to_string()))?,
        );
        let applied = self.ensure(desired.clone()).await?;
        Ok((desired, applied))
    }

    /// Converges the NB to `desired`: one diff against the mirror, its bounded
    /// transactions sent in order (each stands alone; inserts carry deterministic uuids,
    /// so a replay after a lost reply fails instead of duplicating), then a diff again from
    /// the mirror (current when a transact returns), re-planning only if something else
    /// moved meanwhile, [`MAX_ROUNDS`] plans at most. A failed transaction ends the apply
    /// with [`Error::Transact`]; calling again resumes from what committed.
    pub async fn ensure(&self, desired: Arc<Desired>) -> Result<Applied> {
        let span = tracing::info_span!("nb apply", kind = "full", rows = desired.rows.len());
        self.converge(desired, false).instrument(span).await
    }

    /// Starts recording what the fast paths write, for a fenced convergence of a snapshot
    /// taken now ([`Applier::ensure_fenced`]). Call it before the fast paths of anything
    /// newer than the snapshot run. One fenced convergence at a time.
    pub fn fence_from_now(&self) -> FenceRun {
        let mut log = self.gate.log();
        log.active = true;
        log.fence = Fence::default();
        log.generation += 1;
        FenceRun {
            gate: self.gate.clone(),
        }
    }

    /// Converges the NB to `desired` (built from a snapshot taken at [`Applier::fence_from_now`])
    /// while fast paths keep writing: every plan leaves what they wrote since as the NB
    /// holds it (`ferry_net::diff_fenced`). Plans are made without the send lock and their
    /// transactions sent one by one under it; a fast path in between ends the plan (each
    /// transaction stands alone) and the next is made with the new fence. After
    /// [`FENCED_TRIES`] plans cut short, one is made and sent with the lock held. Ends with
    /// an empty plan (converged) or after [`MAX_ROUNDS`] plans sent whole.
    pub async fn ensure_fenced(&self, desired: Arc<Desired>, run: FenceRun) -> Result<Applied> {
        let span = tracing::info_span!("nb apply", kind = "fenced", rows = desired.rows.len());
        let applied = self.converge(desired, true).instrument(span).await;
        drop(run);
        applied
    }

    /// [`Applier::ensure`] (`fenced` false: every plan made and sent with the send lock
    /// held) or [`Applier::ensure_fenced`].
    async fn converge(&self, desired: Arc<Desired>, fenced: bool) -> Result<Applied> {
        let started = Instant::now();
        let mut applied = Applied::default();
        let (mut cut_short, mut whole) = (0, 0);
        loop {
            // Nobody sends between this plan and its transactions: a fast path in between
            // would be undone by an unfenced plan.
            let held = if !fenced || cut_short >= FENCED_TRIES {
                Some(self.gate.send.lock().await)
            } else {
                None
            };
            let (generation, fence) = match fenced {
                true => {
                    let log = self.gate.log();
                    (log.generation, log.fence.clone())
                }
                false => (0, Fence::default()),
            };
            let (client, d, max) = (self.client.clone(), desired.clone(), self.max_ops);
            let (read, plan_time, plan) = tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                let current = client.with_mirror(indexed_rows);
                let read = t.elapsed();
                let t = Instant::now();
                // The mirror as it is now: a row changed since is fenced or read anew.
                let full: ferry_net::FullRow = &|r| {
                    Some(Cow::Owned(
                        client.with_mirror(|m| m.row(&r.table, &r.uuid))?,
                    ))
                };
                let plan = ferry_net::diff_fenced_with(&d, &current, full, max, &fence);
                (read, t.elapsed(), plan)
            })
            .await
            .map_err(|e| Error::Plan(e.to_string()))?;
            let mut round = Round {
                read,
                plan: plan_time,
                transactions: Vec::new(),
            };
            if plan.is_empty() {
                applied.converged = true;
                applied.rounds.push(round);
                break;
            }
            if whole == MAX_ROUNDS {
                applied.rounds.push(round);
                break;
            }
            let mut interrupted = false;
            for ops in plan.transactions {
                let _sending = match &held {
                    Some(_) => None,
                    None => Some(self.gate.send.lock().await),
                };
                if held.is_none() && self.gate.generation() != generation {
                    interrupted = true;
                    break;
                }
                if let Err(source) = self.send(vec![ops], &mut round).await {
                    applied.rounds.push(round);
                    return Err(Error::Transact {
                        sent: applied.transactions(),
                        source,
                    });
                }
            }
            applied.rounds.push(round);
            if interrupted {
                cut_short += 1;
            } else {
                whole += 1;
            }
        }
        self.record_rows();
        if applied.transactions() > 0 {
            tracing::info!(
                txns = applied.transactions(),
                ops = applied.ops(),
                converged = applied.converged,
                fenced,
                cut_short,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "NB converged"
            );
        }
        Ok(applied)
    }

    /// The service fast path: converges only the load balancers of `changed` (their new
    /// states) and of `owners` (every touched service's `ferry.io/owner`, removed ones
    /// included), with one mutate of each group they are in, [`Applier::max_ops`] services
    /// per transaction. `Ok(None)` when it does not apply (an EIP, a group not yet in the
    /// NB, ...; see `ferry_net::cluster_ip_delta`) and nothing was sent: converge
    /// everything with [`Applier::ensure`] instead.
    pub async fn ensure_services(
        &self,
        changed: &[ServiceState],
        owners: &BTreeSet<String>,
    ) -> Result<Option<Applied>> {
        let _sending = self.gate.send.lock().await;
        let t = Instant::now();
        let current: Vec<CurrentRow> = self.client.with_mirror(|m| {
            // The load balancers of `owners`, found on the compact rows (only those are
            // built), then Ferry's few groups.
            let (lb, group) = (nb::load_balancer::TABLE, nb::load_balancer_group::TABLE);
            let owned = m
                .table(lb)
                .map(|t| {
                    t.rows_with_map_str(nb::load_balancer::EXTERNAL_IDS, ferry_net::OWNER, |o| {
                        owners.contains(o)
                    })
                })
                .unwrap_or_default();
            let groups = m
                .table(group)
                .into_iter()
                .flatten()
                .filter(|(_, columns)| ferry_net::delta_input(group, columns, owners));
            let row = |table: &str, (uuid, columns)| CurrentRow {
                table: table.to_string(),
                uuid,
                columns,
            };
            owned
                .into_iter()
                .map(|r| row(lb, r))
                .chain(groups.map(|r| row(group, r)))
                .collect()
        });
        let read = t.elapsed();
        let t = Instant::now();
        // Chunks of services with their owners; owners of removed services go last. All
        // are planned from this one read (chunks touch distinct load balancers); nothing
        // is sent unless all apply.
        let mut deltas = Vec::new();
        let mut left = owners.clone();
        for chunk in changed.chunks(self.max_ops) {
            let mine: BTreeSet<String> = chunk
                .iter()
                .map(ferry_net::scenario::service_owner)
                .filter(|o| left.remove(o))
                .collect();
            match ferry_net::cluster_ip_delta(chunk, &mine, &current) {
                Some(ops) => deltas.push(ops),
                None => return Ok(None),
            }
        }
        if !left.is_empty() {
            match ferry_net::cluster_ip_delta(&[], &left, &current) {
                Some(ops) => deltas.push(ops),
                None => return Ok(None),
            }
        }
        let sent = self.send_fast("services", read, t.elapsed(), deltas).await;
        // Recorded even if nothing needed sending or a transaction failed: what the NB
        // holds for these services is newer than any fenced convergence's snapshot.
        self.gate.record(owners.iter().cloned(), []);
        sent.map(Some)
    }

    /// The workload-port fast path: `changes` pairs each changed port's old and new state.
    /// `Ok(None)` when it does not apply (a switch not yet in the NB, ...; see
    /// `ferry_net::port_delta`) and nothing was sent.
    pub async fn ensure_ports(&self, changes: &[PortChange]) -> Result<Option<Applied>> {
        let _sending = self.gate.send.lock().await;
        let t = Instant::now();
        let names: BTreeSet<&str> = changes
            .iter()
            .flat_map(|(a, b)| a.iter().chain(b.iter()))
            .map(|p| p.name.as_str())
            .collect();
        let current = self.client.with_mirror(|m| {
            // Only the ports named are built from the mirror's compact rows (a scan of
            // their names), not all 200,000.
            let ports = m
                .table(nb::logical_switch_port::TABLE)
                .map(|t| t.rows_with_str(nb::logical_switch_port::NAME, |n| names.contains(n)))
                .unwrap_or_default();
            let switches: Vec<(String, ferry_ovsdb::Row)> = m
                .table(nb::logical_switch::TABLE)
                .into_iter()
                .flatten()
                .collect();
            ferry_net::port_delta_current(
                changes,
                ports.iter().map(|(u, r)| (u, r)),
                switches.iter().map(|(u, r)| (u, r)),
            )
        });
        let read = t.elapsed();
        let t = Instant::now();
        // Bounded transactions keep ovsdb-server responsive. Chunks touch distinct ports,
        // so all are planned from this one read; nothing is sent unless all apply.
        let mut deltas = Vec::new();
        for chunk in changes.chunks(PORTS_PER_TXN) {
            match ferry_net::port_delta(chunk, &current) {
                Some(ops) => deltas.push(ops),
                None => return Ok(None),
            }
        }
        let sent = self.send_fast("ports", read, t.elapsed(), deltas).await;
        self.gate
            .record([], names.iter().map(|n| ferry_net::port_key(n)));
        sent.map(Some)
    }

    /// Sends a fast path's transactions in order, in a span naming the path (`kind`).
    async fn send_fast(
        &self,
        kind: &'static str,
        read: Duration,
        plan: Duration,
        deltas: Vec<Vec<Value>>,
    ) -> Result<Applied> {
        let span = tracing::debug_span!("nb apply", kind);
        let mut round = Round {
            read,
            plan,
            transactions: Vec::new(),
        };
        let deltas: Vec<_> = deltas.into_iter().filter(|o| !o.is_empty()).collect();
        let r = self.send(deltas, &mut round).instrument(span.clone()).await;
        let applied = Applied {
            rounds: vec![round],
            converged: r.is_ok(),
        };
        r.map_err(|source| Error::Transact {
            sent: applied.transactions(),
            source,
        })?;
        self.record_rows();
        tracing::debug!(
            parent: &span,
            txns = applied.transactions(),
            ops = applied.ops(),
            "NB fast path applied"
        );
        Ok(applied)
    }

    /// Sends `transactions` in order, recording each in `round`; stops at the first error.
    async fn send(
        &self,
        transactions: Vec<Vec<Value>>,
        round: &mut Round,
    ) -> std::result::Result<(), ferry_ovsdb::Error> {
        for ops in transactions {
            if let Some(f) = &self.before_send {
                f(&ops);
            }
            let n = ops.len();
            let t = Instant::now();
            ferry_metrics::controller()
                .nb_transaction(self.client.transact(nb::DATABASE, ops))
                .await?;
            round.transactions.push(Sent {
                ops: n,
                elapsed: t.elapsed(),
            });
        }
        Ok(())
    }

    /// Sets `ferry_nb_rows{table}` from the mirror.
    fn record_rows(&self) {
        self.client.with_mirror(|m| {
            ferry_metrics::controller()
                .set_nb_rows(m.tables().iter().map(|(t, rows)| (t.as_str(), rows.len())))
        });
    }
}
