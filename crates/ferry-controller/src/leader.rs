//! Leader election over a `coordination.k8s.io/v1` Lease, so several controller replicas can
//! run with warm caches while one writes. A clean exit releases the Lease (the next replica
//! takes over at its next retry); a crash leaves it to expire after `lease_duration`.
//!
//! The Lease is held by a task of its own ([`spawn`]), on its own schedule, never by the
//! pass loop: a long pass cannot make the Lease lapse while its holder still writes. The
//! task publishes the [`Term`] it leads in; it turns `None` the moment the holder cannot
//! prove it still leads (the Lease was taken, or `renew_deadline` passed without a successful
//! renewal, even while a renewal request hangs), and the pass driver and its writer stop
//! writing on that edge. As client-go's leader election, `renew_deadline` is shorter than
//! `lease_duration`, so the old leader has stopped before a standby may take over.
//!
//! The task runs on an OS thread and a single-threaded runtime of its own, and, given the
//! API server's client configuration ([`LeaderConfig::own_client`]), over a connection of
//! its own: a pass that keeps the controller's worker threads busy for seconds (a full
//! pass over 200k ports) or a long request queued on the shared connection pool cannot
//! delay a renewal. At 10,000 hollow nodes the renewal sharing both lost the lease 25
//! times in 40 minutes.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

/// Where the Lease lives and how it is held.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    /// How often a candidate retries and the leader renews.
    pub retry: Duration,
    /// The leader stops writing when it has not renewed for this long.
    pub renew_deadline: Duration,
    /// The API server's client configuration: the Lease task builds its own client (its
    /// own connections) from it. `None` shares the controller's client.
    pub own_client: Option<kube::Config>,
}

impl LeaderConfig {
    pub fn new(identity: impl Into<String>) -> Self {
        LeaderConfig {
            namespace: "kube-system".into(),
            name: "ferry-controller".into(),
            identity: identity.into(),
            lease_duration: Duration::ZERO,
            retry: Duration::ZERO,
            renew_deadline: Duration::ZERO,
            own_client: None,
        }
        // 5 s by default: the only replica of `ferry up` on a loaded 2-core machine lost
        // a 2 s lease every few seconds while its renewals shared the controller's runtime
        // (passes dropped, pods left without addresses). Replicas that must fail over
        // fast take a shorter one (`ferry controller --lease-duration-s`).
        .with_lease(Duration::from_secs(5))
    }

    /// The lease `lease_duration` long (whole seconds, at least one: a Lease counts in
    /// seconds), renewed every eighth of it (at least 250 ms) and given up after three
    /// quarters of it without a renewal.
    pub fn with_lease(mut self, lease_duration: Duration) -> Self {
        let lease = Duration::from_secs(lease_duration.as_secs().max(1));
        self.lease_duration = lease;
        self.retry = (lease / 8).max(Duration::from_millis(250));
        self.renew_deadline = lease * 3 / 4;
        self
    }
}

/// What a candidate should do with the Lease it read (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Create it: nobody holds it yet.
    Create,
    /// Take it over or renew it.
    Take,
    /// Someone else holds a live lease.
    Wait,
}

pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return Decision::Take;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(10)) * 1000;
    match spec.renew_time.as_ref() {
        Some(MicroTime(t)) if t.as_millisecond() + duration > now.as_millisecond() => {
            Decision::Wait
        }
        _ => Decision::Take,
    }
}

fn spec(cfg: &LeaderConfig, previous: Option<&LeaseSpec>) -> LeaseSpec {
    let now = MicroTime(Timestamp::now());
    let same_holder =
        previous.and_then(|p| p.holder_identity.as_deref()) == Some(cfg.identity.as_str());
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.lease_duration.as_secs().max(1) as i32),
        acquire_time: if same_holder {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(now.clone())
        },
        renew_time: Some(now),
        lease_transitions: Some(if same_holder {
            transitions
        } else {
            transitions + 1
        }),
        ..Default::default()
    }
}

/// One attempt to become (or stay) leader; true when we hold the Lease afterwards.
pub async fn try_acquire(client: &Client, cfg: &LeaderConfig) -> kube::Result<bool> {
    Ok(acquire_once(client, cfg).await?.is_some())
}

/// One attempt to become (or stay) leader (a read, then a write); the Lease as written
/// when we hold it afterwards.
async fn acquire_once(client: &Client, cfg: &LeaderConfig) -> kube::Result<Option<Lease>> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let current = api.get_opt(&cfg.name).await?;
    let written = match decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &cfg.identity,
        Timestamp::now(),
    ) {
        Decision::Wait => return Ok(None),
        Decision::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec(cfg, None)),
            };
            api.create(&PostParams::default(), &lease).await
        }
        Decision::Take => {
            let Some(mut lease) = current else {
                return Ok(None);
            };
            lease.spec = Some(spec(cfg, lease.spec.as_ref()));
            api.replace(&cfg.name, &PostParams::default(), &lease).await
        }
    };
    match written {
        Ok(l) => Ok(Some(l)),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Renews a Lease we hold with one write (its resourceVersion proves nobody wrote it
/// since): half the round trips of a read and a write, which matters when the API
/// server is loaded. A conflict falls back to [`acquire_once`].
async fn renew(client: &Client, cfg: &LeaderConfig, held: &Lease) -> kube::Result<Option<Lease>> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let mut lease = held.clone();
    lease.spec = Some(spec(cfg, held.spec.as_ref()));
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(l) => Ok(Some(l)),
        Err(kube::Error::Api(e)) if e.code == 409 => acquire_once(client, cfg).await,
        Err(e) => Err(e),
    }
}

/// Waits until this replica leads.
pub async fn acquire(client: &Client, cfg: &LeaderConfig) {
    loop {
        match try_acquire(client, cfg).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election: reading the lease failed"),
        }
        tokio::time::sleep(cfg.retry).await;
    }
}

/// One unbroken hold of the Lease by one holder. Taking the Lease from another holder (or
/// from nobody, after a release) counts a transition, so a replica that wins back a Lease
/// in the same term knows that nobody else held it, and wrote, in between: what it had
/// queued is still right (`crate::leadership`). The uid tells a re-created Lease apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub lease_uid: String,
    pub transitions: i32,
}

impl Term {
    pub fn of(lease: &Lease) -> Term {
        Term {
            lease_uid: lease.metadata.uid.clone().unwrap_or_default(),
            transitions: lease
                .spec
                .as_ref()
                .and_then(|s| s.lease_transitions)
                .unwrap_or(0),
        }
    }
}

/// What the Lease task publishes: the term this replica leads in, `None` while it does not.
pub type Leadership = Option<Term>;

/// Where leadership stands, as the Lease task sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standby,
    Leading,
}

/// What the Lease task does next (pure): given the role, when it last renewed, and the
/// outcome of its last attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The Lease is ours (acquired or renewed).
    Held,
    /// Someone else holds a live Lease.
    Refused,
    /// The request failed or timed out: we do not know.
    Failed,
}

/// The role after an attempt: a refusal ends leadership at once; a failure ends it only
/// once `renew_deadline` passed since the last renewal.
pub fn next_role(
    role: Role,
    attempt: Attempt,
    since_renewal: Duration,
    renew_deadline: Duration,
) -> Role {
    match (role, attempt) {
        (_, Attempt::Held) => Role::Leading,
        (_, Attempt::Refused) => Role::Standby,
        (Role::Leading, Attempt::Failed) if since_renewal < renew_deadline => Role::Leading,
        (_, Attempt::Failed) => Role::Standby,
    }
}

/// Holds the Lease until `shutdown`: publishes the term while leading, `None` otherwise,
/// releases the Lease on the way out. Returns the published leadership.
pub fn spawn(
    client: Client,
    cfg: LeaderConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> (
    tokio::sync::watch::Receiver<Leadership>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::watch::channel(None);
    // A blocking-pool thread is an OS thread of its own for as long as the task runs.
    let task = tokio::task::spawn_blocking(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "leader election: no runtime for the Lease task; never leading");
                return;
            }
        };
        rt.block_on(async move {
            // Built inside this runtime, so its connections and request queue live here.
            let client = match cfg.own_client.clone().map(Client::try_from) {
                Some(Ok(own)) => own,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "leader election: no client of its own; sharing the controller's");
                    client
                }
                None => client,
            };
            hold(client, cfg, tx, shutdown).await
        })
    });
    (rx, task)
}

/// The Lease task's loop (see [`spawn`]).
async fn hold(
    client: Client,
    cfg: LeaderConfig,
    tx: tokio::sync::watch::Sender<Leadership>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut role = Role::Standby;
    let mut renewed = Instant::now();
    // The Lease as we last wrote it, while we hold it.
    let mut held: Option<Lease> = None;
    loop {
        // A renewal may not outlive the deadline: past it, we no longer lead whatever
        // the request would have said.
        let budget = match role {
            Role::Leading => cfg.renew_deadline.saturating_sub(renewed.elapsed()),
            Role::Standby => cfg.lease_duration,
        };
        let started = Instant::now();
        let attempt = tokio::select! {
            r = tokio::time::timeout(budget, async {
                match (&role, &held) {
                    (Role::Leading, Some(h)) => renew(&client, &cfg, h).await,
                    _ => acquire_once(&client, &cfg).await,
                }
            }) => match r {
                Ok(Ok(Some(l))) => {
                    held = Some(l);
                    Attempt::Held
                }
                Ok(Ok(None)) => {
                    held = None;
                    Attempt::Refused
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "leader election: the lease request failed");
                    Attempt::Failed
                }
                Err(_) => Attempt::Failed,
            },
            _ = stopped(&mut shutdown) => break,
        };
        if attempt == Attempt::Held {
            // The Lease's clock started when the request was sent.
            renewed = started;
        }
        let next = next_role(role, attempt, renewed.elapsed(), cfg.renew_deadline);
        if next != role {
            match next {
                Role::Leading => tracing::info!(identity = %cfg.identity, "leading"),
                Role::Standby => {
                    tracing::warn!(identity = %cfg.identity, ?attempt, "not leading")
                }
            }
            role = next;
        }
        // A renewal keeps the term; a Lease taken back from another holder while still
        // leading (clocks apart) starts a new one, published like a takeover.
        let term = match role {
            Role::Leading => held.as_ref().map(Term::of),
            Role::Standby => None,
        };
        tx.send_if_modified(|published| {
            let changed = *published != term;
            *published = term;
            changed
        });
        // While leading, also wake at the deadline, so the term falls on time even if
        // the next attempt cannot start.
        let wait = match role {
            Role::Leading => cfg
                .retry
                .min(cfg.renew_deadline.saturating_sub(renewed.elapsed())),
            Role::Standby => cfg.retry,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(&mut shutdown) => break,
        }
        if role == Role::Leading && renewed.elapsed() >= cfg.renew_deadline {
            role = Role::Standby;
            tx.send_replace(None);
            tracing::warn!(identity = %cfg.identity, "renew deadline passed; not leading");
        }
    }
    let was_leading = tx.borrow().is_some();
    tx.send_replace(None);
    if was_leading {
        release(&client, &cfg).await;
        tracing::info!("released the leader lease");
    }
}

/// Resolves once the flag turns true (the guard `wait_for` returns is not `Send`).
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Gives the Lease up so a standby takes over at once.
pub async fn release(client: &Client, cfg: &LeaderConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    if let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await
        && lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(cfg.identity.as_str())
    {
        if let Some(s) = lease.spec.as_mut() {
            s.holder_identity = Some(String::new());
            s.renew_time = None;
        }
        let _ = api.replace(&cfg.name, &PostParams::default(), &lease).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_ago: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(
                Timestamp::from_second(1_000 - renewed_ago).unwrap(),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert_eq!(decide(None, "a", now), Decision::Create);
        assert_eq!(decide(Some(&lease("a", 1, 10)), "a", now), Decision::Take);
        assert_eq!(decide(Some(&lease("b", 1, 10)), "a", now), Decision::Wait);
        assert_eq!(decide(Some(&lease("b", 11, 10)), "a", now), Decision::Take);
        assert_eq!(decide(Some(&lease("", 1, 10)), "a", now), Decision::Take);
        // Sub-second: a 2 s lease renewed 2.5 s ago has lapsed.
        let renewed = LeaseSpec {
            renew_time: Some(MicroTime(Timestamp::from_millisecond(997_500).unwrap())),
            ..lease("b", 0, 2)
        };
        assert_eq!(decide(Some(&renewed), "a", now), Decision::Take);
        let renewed = LeaseSpec {
            renew_time: Some(MicroTime(Timestamp::from_millisecond(998_500).unwrap())),
            ..lease("b", 0, 2)
        };
        assert_eq!(decide(Some(&renewed), "a", now), Decision::Wait);
    }

    #[test]
    fn timings() {
        let ms = Duration::from_millis;
        let t = |d| {
            let c = LeaderConfig::new("a").with_lease(d);
            (c.lease_duration, c.renew_deadline, c.retry, c.identity)
        };
        let a = String::from("a");
        assert_eq!(t(ms(2000)), (ms(2000), ms(1500), ms(250), a.clone()));
        assert_eq!(t(ms(5000)), (ms(5000), ms(3750), ms(625), a.clone()));
        // Whole seconds, at least one (the Lease counts in seconds).
        assert_eq!(t(ms(2500)), (ms(2000), ms(1500), ms(250), a.clone()));
        assert_eq!(t(ms(0)), (ms(1000), ms(750), ms(250), a.clone()));
        let d = LeaderConfig::new("a");
        assert_eq!(
            (d.lease_duration, d.renew_deadline, d.retry, d.name.as_str()),
            (ms(5000), ms(3750), ms(625), "ferry-controller")
        );
    }

    #[test]
    fn roles() {
        let d = Duration::from_millis(1500);
        let ms = Duration::from_millis;
        let table = [
            (Role::Standby, Attempt::Held, ms(0), Role::Leading),
            (Role::Standby, Attempt::Refused, ms(0), Role::Standby),
            (Role::Standby, Attempt::Failed, ms(0), Role::Standby),
            (Role::Leading, Attempt::Held, ms(0), Role::Leading),
            // Someone else holds it: stop at once.
            (Role::Leading, Attempt::Refused, ms(100), Role::Standby),
            // A failed renewal within the deadline keeps leading; past it, not.
            (Role::Leading, Attempt::Failed, ms(1000), Role::Leading),
            (Role::Leading, Attempt::Failed, ms(1500), Role::Standby),
        ];
        for (role, attempt, since, want) in table {
            assert_eq!(
                next_role(role, attempt, since, d),
                want,
                "{role:?} {attempt:?} {since:?}"
            );
        }
    }
}
