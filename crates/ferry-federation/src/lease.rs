//! Leader election for the federation controller's replicas over a
//! `coordination.k8s.io/v1` Lease in the federation API server. The same scheme as
//! `ferry-controller`'s leader module, kept here so the federation does not depend on the
//! member controller crate.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

/// Where the Lease lives and how it is held.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

impl LeaseConfig {
    pub fn new(identity: impl Into<String>) -> Self {
        LeaseConfig {
            namespace: "kube-system".into(),
            name: "ferry-federation-controller".into(),
            identity: identity.into(),
            duration: Duration::from_secs(10),
        }
    }
}

/// Whether a candidate may take (or renew) the Lease it read (pure).
pub fn may_take(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> bool {
    let Some(spec) = lease else { return true };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return true;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(10)) * 1000;
    match spec.renew_time.as_ref() {
        Some(MicroTime(t)) => t.as_millisecond() + duration <= now.as_millisecond(),
        None => true,
    }
}

/// One attempt to become (or stay) leader; true when this replica holds the Lease.
pub async fn try_acquire(client: &Client, cfg: &LeaseConfig) -> kube::Result<bool> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let current = api.get_opt(&cfg.name).await?;
    let now = Timestamp::now();
    if !may_take(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &cfg.identity,
        now,
    ) {
        return Ok(false);
    }
    let previous = current.as_ref().and_then(|l| l.spec.clone());
    let same =
        previous.as_ref().and_then(|p| p.holder_identity.as_deref()) == Some(cfg.identity.as_str());
    let transitions = previous
        .as_ref()
        .and_then(|p| p.lease_transitions)
        .unwrap_or(0);
    let spec = LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.duration.as_secs().max(1) as i32),
        acquire_time: if same {
            previous.as_ref().and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if same { transitions } else { transitions + 1 }),
        ..Default::default()
    };
    let result = match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Some(mut lease) => {
            lease.spec = Some(spec);
            api.replace(&cfg.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up so a standby takes over at once.
pub async fn release(client: &Client, cfg: &LeaseConfig) {
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

    #[test]
    fn who_may_take_the_lease() {
        let now = Timestamp::from_second(1_000).expect("ts");
        let lease = |holder: &str, ago: i64| LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(10),
            renew_time: Some(MicroTime(Timestamp::from_second(1_000 - ago).expect("ts"))),
            ..Default::default()
        };
        for (name, spec, want) in [
            ("nobody holds it", None, true),
            ("I hold it", Some(lease("a", 1)), true),
            ("another holds a live one", Some(lease("b", 1)), false),
            ("another's expired", Some(lease("b", 11)), true),
            ("released", Some(lease("", 1)), true),
        ] {
            assert_eq!(may_take(spec.as_ref(), "a", now), want, "{name}");
        }
    }
}
