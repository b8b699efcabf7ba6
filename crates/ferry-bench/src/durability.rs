//! `ferry bench durability`: the promise "a write the API server answered 2xx survives
//! `kill -9`", tested the hard way. A real `ferry apiserver` runs as a child process;
//! `writers` concurrent clients create, update (with a `resourceVersion` precondition) and
//! delete ConfigMaps, each writer owning its own keys and recording every acknowledged
//! write; at a random moment the server gets SIGKILL, is started again on the same data
//! directory, and every key is checked against what was acknowledged:
//!
//! - the object holds the last acknowledged state, or the state of the one write that was
//!   in flight when the server died (its outcome is unknown: either is allowed);
//! - its `resourceVersion` is the acknowledged one (or the in-flight write's, newer);
//! - `resourceVersion`s only grow: each writer's acknowledgements in order, the list's
//!   revision after a restart against everything acknowledged before, and the first
//!   acknowledgement after a restart against the last one before it.
//!
//! A key whose acknowledged state is gone is a *missing write*. Prints a table and JSON;
//! asserts nothing (the `ferry` crate's test runs a short campaign and asserts zero).
//!
//! Over 600 lines: the campaign loop, its writers and its checks read best together; the
//! per-key checks after a restart (`judge` and the loop around it) would be the first to
//! move, to `durability/check.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

/// Keys each writer owns.
const KEYS_PER_WRITER: usize = 8;
/// Namespace of the campaign's objects.
const NAMESPACE: &str = "durability";

/// What to run.
#[derive(Debug, Clone)]
pub struct DurabilityOptions {
    /// Kill-and-restart cycles.
    pub cycles: usize,
    /// Concurrent writers.
    pub writers: usize,
    /// The `ferry` binary (its `apiserver` command is the server under test).
    pub ferry: PathBuf,
    /// Write the JSON here too.
    pub out: Option<PathBuf>,
    /// The kill comes a random time in `[min_kill_ms, max_kill_ms]` after the writers start.
    pub min_kill_ms: u64,
    pub max_kill_ms: u64,
    /// Seed of the kill times and the writers' choices (the time if `None`).
    pub seed: Option<u64>,
}

impl DurabilityOptions {
    /// `cycles` x `writers`, kills 50-1500 ms into each cycle.
    pub fn new(cycles: usize, writers: usize, ferry: PathBuf) -> DurabilityOptions {
        DurabilityOptions {
            cycles,
            writers,
            ferry,
            out: None,
            min_kill_ms: 50,
            max_kill_ms: 1500,
            seed: None,
        }
    }
}

/// The figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DurabilityResult {
    pub cycles: usize,
    pub writers: usize,
    pub seed: u64,
    /// Writes answered 2xx (creates + updates + deletes).
    pub acknowledged_writes: u64,
    pub creates: u64,
    pub updates: u64,
    pub deletes: u64,
    /// Writes in flight at a kill (outcome unknown; either outcome is accepted).
    pub in_flight_at_kill: u64,
    /// Of those, how many turned out committed.
    pub in_flight_committed: u64,
    /// Keys whose last acknowledged write was not found after a restart.
    pub missing_writes: u64,
    /// `resourceVersion`s that went backwards (see the module doc).
    pub rv_regressions: u64,
    /// Keys in a state no acknowledged or in-flight write explains.
    pub unexplained_states: u64,
    /// Kill to serving again, per cycle.
    pub restart_p50_ms: f64,
    pub restart_max_ms: f64,
    /// The first problems found, for the reader.
    pub problems: Vec<String>,
}

/// What a key holds (for the writer that owns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Absent,
    /// `data.seq` of the object.
    Present(u64),
}

/// One owned key as its writer knows it.
#[derive(Debug, Clone)]
struct Key {
    name: String,
    /// The last acknowledged state, with its resourceVersion (0 for absent).
    acked: State,
    acked_rv: u64,
    /// A write sent and not answered (the server died): its intended state.
    pending: Option<State>,
}

/// A writer's record of one cycle.
#[derive(Debug, Default)]
struct Record {
    creates: u64,
    updates: u64,
    deletes: u64,
    /// resourceVersions of its acknowledged creates and updates, in order.
    rvs: Vec<u64>,
    problems: Vec<String>,
}

/// Deterministic small PRNG (xorshift64*), so a campaign can be replayed by seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The verdict on one key after a restart: the pure decision the campaign counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The acknowledged state is there.
    Acked,
    /// The in-flight write's state is there (it committed before the kill).
    InFlightCommitted,
    /// The acknowledged state is gone and no in-flight write explains it.
    Missing,
    /// Something else (e.g. a seq no write of ours produced).
    Unexplained,
}

fn judge(acked: State, pending: Option<State>, actual: State) -> Verdict {
    if actual == acked {
        Verdict::Acked
    } else if pending == Some(actual) {
        Verdict::InFlightCommitted
    } else {
        match (acked, actual) {
            (State::Present(a), State::Present(b)) if b < a => Verdict::Missing,
            (State::Present(_), State::Absent) => Verdict::Missing,
            (State::Absent, State::Present(_)) => Verdict::Missing,
            _ => Verdict::Unexplained,
        }
    }
}

fn rv_of(cm: &ConfigMap) -> u64 {
    cm.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn seq_of(cm: &ConfigMap) -> u64 {
    cm.data
        .as_ref()
        .and_then(|d| d.get("seq"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn config_map(name: &str, writer: usize, seq: u64, rv: Option<u64>) -> ConfigMap {
    let mut cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"durability-writer": writer.to_string()}},
        "data": {"seq": seq.to_string(), "writer": writer.to_string(),
            "payload": "0123456789abcdef".repeat(8)}
    }))
    .unwrap_or_default();
    cm.metadata.resource_version = rv.map(|v| v.to_string());
    cm
}

/// The API server under test: `ferry apiserver` on a fixed port and data directory.
struct Server {
    ferry: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let child = Command::new(&self.ferry)
            .args(["apiserver", "--data-dir"])
            .arg(&self.data)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.ferry.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL and reap.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A client once the server answers (the kubeconfig is read again: it names the CA).
    async fn ready(&mut self, timeout: Duration) -> Result<Client, String> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!(
                    "ferry apiserver exited ({status}); see {}",
                    self.log.display()
                ));
            }
            match client(&self.data.join("kubeconfig")).await {
                Ok(c) => match c.apiserver_version().await {
                    Ok(_) => return Ok(c),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "ferry apiserver not serving after {timeout:?}: {last}; see {}",
            self.log.display()
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn client(kubeconfig: &Path) -> Result<Client, String> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    cfg.read_timeout = Some(Duration::from_secs(30));
    cfg.connect_timeout = Some(Duration::from_secs(2));
    Client::try_from(cfg).map_err(|e| e.to_string())
}

/// Runs the campaign in a temporary directory.
pub async fn run(opts: &DurabilityOptions) -> Result<DurabilityResult, String> {
    let dir = tempfile::Builder::new()
        .prefix("ferry-durability-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let seed = opts.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    let mut rng = Rng(seed);
    eprintln!(
        "durability bench: {} cycles x {} writers in {} (seed {seed})",
        opts.cycles,
        opts.writers,
        dir.path().display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut server = Server {
        ferry: opts.ferry.clone(),
        data: dir.path().join("data"),
        log: dir.path().join("apiserver.log"),
        port,
        child: None,
    };
    server.spawn()?;
    let c = server.ready(Duration::from_secs(60)).await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c);
    let ns = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))
        .map_err(|e| e.to_string())?;
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .map_err(|e| format!("creating namespace {NAMESPACE}: {e}"))?;

    let mut keys: Vec<Vec<Key>> = (0..opts.writers)
        .map(|w| {
            (0..KEYS_PER_WRITER)
                .map(|j| Key {
                    name: format!("w{w}-k{j}"),
                    acked: State::Absent,
                    acked_rv: 0,
                    pending: None,
                })
                .collect()
        })
        .collect();
    let mut result = DurabilityResult {
        cycles: opts.cycles,
        writers: opts.writers,
        seed,
        ..Default::default()
    };
    let mut restarts_ms = Vec::new();
    let mut last_rv_before = 0u64;
    let mut next_seq = 1u64;

    for cycle in 0..opts.cycles {
        let c = server.ready(Duration::from_secs(60)).await?;
        let killed = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = keys
            .drain(..)
            .enumerate()
            .map(|(w, owned)| {
                let api: Api<ConfigMap> = Api::namespaced(c.clone(), NAMESPACE);
                let killed = killed.clone();
                let rng = Rng(rng.next() | 1);
                // Sequence numbers never repeat across writers and cycles.
                let base = next_seq + (w as u64) * 1_000_000;
                tokio::spawn(write_until_killed(api, w, owned, rng, base, killed))
            })
            .collect();
        next_seq += (opts.writers as u64) * 1_000_000;
        let span = opts.max_kill_ms.saturating_sub(opts.min_kill_ms);
        tokio::time::sleep(Duration::from_millis(
            opts.min_kill_ms + rng.below(span + 1),
        ))
        .await;
        // The flag first: an error a writer sees from here on may be the kill's.
        killed.store(true, Ordering::SeqCst);
        server.kill9();
        let killed_at = Instant::now();
        let mut records = Vec::new();
        for t in tasks {
            let (owned, record) = t.await.map_err(|e| e.to_string())?;
            keys.push(owned);
            records.push(record);
        }
        server.spawn()?;
        let c = server.ready(Duration::from_secs(60)).await?;
        restarts_ms.push(killed_at.elapsed().as_secs_f64() * 1000.0);

        // Check every key against what was acknowledged, then adopt what is there.
        let api: Api<ConfigMap> = Api::namespaced(c, NAMESPACE);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing after restart {cycle}: {e}"))?;
        let list_rv: u64 = list
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let actual: BTreeMap<String, (u64, u64)> = list
            .items
            .iter()
            .map(|cm| {
                (
                    cm.metadata.name.clone().unwrap_or_default(),
                    (seq_of(cm), rv_of(cm)),
                )
            })
            .collect();
        let mut problems = Vec::new();
        let mut max_acked = 0;
        let mut first_acked = u64::MAX;
        for r in &records {
            result.creates += r.creates;
            result.updates += r.updates;
            result.deletes += r.deletes;
            problems.extend(r.problems.iter().cloned());
            for pair in r.rvs.windows(2) {
                if pair[1] <= pair[0] {
                    result.rv_regressions += 1;
                    problems.push(format!(
                        "cycle {cycle}: a writer's acknowledged resourceVersions went {} -> {}",
                        pair[0], pair[1]
                    ));
                }
            }
            max_acked = max_acked.max(r.rvs.iter().copied().max().unwrap_or(0));
            first_acked = first_acked.min(r.rvs.first().copied().unwrap_or(u64::MAX));
        }
        if first_acked != u64::MAX && first_acked <= last_rv_before {
            result.rv_regressions += 1;
            problems.push(format!(
                "cycle {cycle}: resourceVersion {first_acked} acknowledged after a restart, \
                 not above {last_rv_before} acknowledged before it"
            ));
        }
        if list_rv < max_acked {
            result.rv_regressions += 1;
            problems.push(format!(
                "cycle {cycle}: the list after the restart is at revision {list_rv}, \
                 below the acknowledged {max_acked}"
            ));
        }
        last_rv_before = last_rv_before.max(max_acked).max(list_rv);
        for owned in &mut keys {
            for k in owned.iter_mut() {
                let (state, rv) = match actual.get(&k.name) {
                    Some((seq, rv)) => (State::Present(*seq), *rv),
                    None => (State::Absent, 0),
                };
                if k.pending.is_some() {
                    result.in_flight_at_kill += 1;
                }
                match judge(k.acked, k.pending, state) {
                    Verdict::Acked => {
                        if let State::Present(_) = state
                            && rv != k.acked_rv
                        {
                            result.rv_regressions += 1;
                            problems.push(format!(
                                "cycle {cycle}: {} holds the acknowledged data at \
                                 resourceVersion {rv}, acknowledged as {}",
                                k.name, k.acked_rv
                            ));
                        }
                    }
                    Verdict::InFlightCommitted => {
                        result.in_flight_committed += 1;
                        if matches!(state, State::Present(_)) && rv <= k.acked_rv {
                            result.rv_regressions += 1;
                            problems.push(format!(
                                "cycle {cycle}: {} committed in flight at resourceVersion \
                                 {rv}, not above the acknowledged {}",
                                k.name, k.acked_rv
                            ));
                        }
                    }
                    Verdict::Missing => {
                        result.missing_writes += 1;
                        problems.push(format!(
                            "cycle {cycle}: {} acknowledged as {:?} (rv {}), found {state:?} \
                             (in flight: {:?})",
                            k.name, k.acked, k.acked_rv, k.pending
                        ));
                    }
                    Verdict::Unexplained => {
                        result.unexplained_states += 1;
                        problems.push(format!(
                            "cycle {cycle}: {} is {state:?}; acknowledged {:?}, in flight {:?}",
                            k.name, k.acked, k.pending
                        ));
                    }
                }
                k.acked = state;
                k.acked_rv = rv;
                k.pending = None;
            }
        }
        result.problems.extend(
            problems
                .into_iter()
                .take(20usize.saturating_sub(result.problems.len())),
        );
        let acked: u64 = records
            .iter()
            .map(|r| r.creates + r.updates + r.deletes)
            .sum();
        ferry_lab::progress::count(
            "durability: kill -9 cycles",
            cycle + 1,
            opts.cycles,
            &format!(
                "{acked} acked this cycle, {} missing so far",
                result.missing_writes
            ),
        );
    }
    result.acknowledged_writes = result.creates + result.updates + result.deletes;
    restarts_ms.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    result.restart_p50_ms = restarts_ms
        .get(restarts_ms.len() / 2)
        .copied()
        .unwrap_or(0.0);
    result.restart_max_ms = restarts_ms.last().copied().unwrap_or(0.0);
    server.kill9();
    if let Some(out) = &opts.out {
        let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
        std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(result)
}

/// One writer: until the server is killed, picks one of its keys and creates it (if
/// absent), deletes it (one time in eight) or updates it with a resourceVersion
/// precondition. Returns its keys with acknowledged and in-flight states.
async fn write_until_killed(
    api: Api<ConfigMap>,
    writer: usize,
    mut owned: Vec<Key>,
    mut rng: Rng,
    mut seq: u64,
    killed: Arc<AtomicBool>,
) -> (Vec<Key>, Record) {
    let mut rec = Record::default();
    while !killed.load(Ordering::SeqCst) {
        let j = rng.below(owned.len() as u64) as usize;
        let k = &mut owned[j];
        seq += 1;
        enum Op {
            Create,
            Update,
            Delete,
        }
        let op = match k.acked {
            State::Absent => Op::Create,
            State::Present(_) if rng.below(8) == 0 => Op::Delete,
            State::Present(_) => Op::Update,
        };
        let intended = match op {
            Op::Delete => State::Absent,
            _ => State::Present(seq),
        };
        k.pending = Some(intended);
        let answer = match op {
            Op::Create => api
                .create(
                    &PostParams::default(),
                    &config_map(&k.name, writer, seq, None),
                )
                .await
                .map(|cm| Some(rv_of(&cm))),
            Op::Update => api
                .replace(
                    &k.name,
                    &PostParams::default(),
                    &config_map(&k.name, writer, seq, Some(k.acked_rv)),
                )
                .await
                .map(|cm| Some(rv_of(&cm))),
            Op::Delete => api
                .delete(&k.name, &DeleteParams::default())
                .await
                .map(|_| None),
        };
        match answer {
            Ok(rv) => {
                k.acked = intended;
                k.acked_rv = rv.unwrap_or(0);
                k.pending = None;
                match op {
                    Op::Create => rec.creates += 1,
                    Op::Update => rec.updates += 1,
                    Op::Delete => rec.deletes += 1,
                }
                if let Some(rv) = rv {
                    rec.rvs.push(rv);
                }
            }
            // The server is gone: the outcome stays unknown (pending).
            Err(_) if killed.load(Ordering::SeqCst) => break,
            Err(e) => {
                // Not a kill: a refusal (which writes nothing) or a lost connection
                // (unknown). Either way the next check accepts both states; stop here.
                rec.problems.push(format!(
                    "writer {writer}: {} failed while the server ran: {e}",
                    k.name
                ));
                break;
            }
        }
    }
    // A writer stopped by an error before the kill waits for it, so that its keys'
    // in-flight states stay what they are until the restart.
    while !killed.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (owned, rec)
}

/// The readable table.
pub fn print(r: &DurabilityResult) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header(["figure", "value"]);
    let rows = [
        ("cycles (kill -9 + restart)", r.cycles.to_string()),
        ("writers", r.writers.to_string()),
        (
            "acknowledged writes (creates / updates / deletes)",
            format!(
                "{} ({} / {} / {})",
                r.acknowledged_writes, r.creates, r.updates, r.deletes
            ),
        ),
        (
            "in flight at a kill (of which committed)",
            format!("{} ({})", r.in_flight_at_kill, r.in_flight_committed),
        ),
        ("missing acknowledged writes", r.missing_writes.to_string()),
        ("resourceVersion regressions", r.rv_regressions.to_string()),
        ("unexplained states", r.unexplained_states.to_string()),
        (
            "kill -> serving again p50 / max (ms)",
            format!("{:.0} / {:.0}", r.restart_p50_ms, r.restart_max_ms),
        ),
        ("seed", r.seed.to_string()),
    ];
    for (k, v) in rows {
        t.add_row([k.to_string(), v]);
    }
    println!("{t}");
    for p in &r.problems {
        println!("problem: {p}");
    }
    match serde_json::to_string(r) {
        Ok(j) => println!("{j}"),
        Err(e) => eprintln!("JSON: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        use State::*;
        let cases = [
            (
                "acked state present",
                Present(5),
                None,
                Present(5),
                Verdict::Acked,
            ),
            ("acked delete holds", Absent, None, Absent, Verdict::Acked),
            (
                "in-flight update committed",
                Present(5),
                Some(Present(9)),
                Present(9),
                Verdict::InFlightCommitted,
            ),
            (
                "in-flight update lost: fine",
                Present(5),
                Some(Present(9)),
                Present(5),
                Verdict::Acked,
            ),
            (
                "in-flight delete committed",
                Present(5),
                Some(Absent),
                Absent,
                Verdict::InFlightCommitted,
            ),
            (
                "acked create gone",
                Present(5),
                None,
                Absent,
                Verdict::Missing,
            ),
            (
                "acked update rolled back",
                Present(9),
                None,
                Present(5),
                Verdict::Missing,
            ),
            (
                "acked delete undone",
                Absent,
                None,
                Present(5),
                Verdict::Missing,
            ),
            (
                "a seq nobody wrote",
                Present(5),
                None,
                Present(7),
                Verdict::Unexplained,
            ),
        ];
        for (name, acked, pending, actual, want) in cases {
            assert_eq!(judge(acked, pending, actual), want, "{name}");
        }
    }
}
