//! Leader election over a `coordination.k8s.io/v1` Lease, so several controller replicas can
//! run with warm caches while one writes. A clean exit releases the Lease (the next replica
//! takes over at its next retry); a crash leaves it to expire after `lease_duration`.

use std::time::Duration;

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
}

impl LeaderConfig {
    pub fn new(identity: impl Into<String>) -> Self {
        LeaderConfig {
            namespace: "kube-system".into(),
            name: "ferry-controller".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(10),
            retry: Duration::from_millis(500),
        }
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
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(10));
    match spec.renew_time.as_ref() {
        Some(MicroTime(t)) if t.as_second() + duration > now.as_second() => Decision::Wait,
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
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let current = api.get_opt(&cfg.name).await?;
    match decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &cfg.identity,
        Timestamp::now(),
    ) {
        Decision::Wait => Ok(false),
        Decision::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec(cfg, None)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Decision::Take => {
            let Some(mut lease) = current else {
                return Ok(false);
            };
            lease.spec = Some(spec(cfg, lease.spec.as_ref()));
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
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
    }
}
