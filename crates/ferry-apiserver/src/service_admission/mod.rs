//! `v1 Service` admission: what kube-apiserver's Service registry does before a Service is
//! stored (defaults, validation, cluster IPs from the service CIDR, node ports), so that
//! `kubectl expose` on the embedded server gives what it gives on a real cluster.
//!
//! The decisions are pure ([`admit`] over a [`Ledger`] of who holds what); this module's
//! [`ServiceAdmission`] is the thin part the write path calls. The ledger follows the
//! store (the cache feed records every Service and YusurService put or delete, and a
//! re-list rebuilds it), so it survives restarts without a store of its own. Writes that
//! take addresses are serialized by one lock held from the decision until the cache has
//! the write, so two concurrent creates never get the same address.
//!
//! YusurServices take cluster IPs from the same CIDR (Ferry's controller writes them to
//! `status.clusterIP`): they are in the ledger too, a Service never gets one of theirs,
//! and a YusurService write that would take an address a `v1 Service` holds is refused.

mod alloc;
mod spec;
#[cfg(test)]
mod tests;

use k8s_openapi::api::core::v1::ServiceSpec;
use serde_json::Value;
use std::sync::Mutex;

pub use alloc::{
    Held, Ledger, ServiceNetwork, Taken, TakenFor, allocate, held_by_service,
    held_by_yusur_service, owner_of,
};
pub use spec::{patch_from_old, set_defaults, validate};

/// One refused field: (path, message), as in a 422's `details.causes`.
pub type Cause = (String, String);

const SERVICES: &str = "/registry/core/services/";
const YUSUR_SERVICES: &str = "/registry/iaas.yusur.io/yusurservices/";

/// Everything kube-apiserver does to a Service spec on create (`old` = None) or update:
/// carry allocations over, default, validate, allocate.
pub fn admit(
    spec: &mut ServiceSpec,
    old: Option<&ServiceSpec>,
    net: &ServiceNetwork,
    taken: &dyn Taken,
    seed: u64,
) -> Result<(), Vec<Cause>> {
    if let Some(old) = old {
        patch_from_old(spec, old);
    }
    set_defaults(spec);
    let errs = validate(spec, old);
    if !errs.is_empty() {
        return Err(errs);
    }
    allocate(spec, old, net, taken, seed)
}

/// Which ledger a store key belongs to.
fn kind_of(key: &str) -> Option<fn(&[u8]) -> Held> {
    if key.starts_with(SERVICES) {
        Some(held_by_service)
    } else if key.starts_with(YUSUR_SERVICES) {
        Some(held_by_yusur_service)
    } else {
        None
    }
}

/// The write path's view: the service network, the ledger and the writers' lock.
#[derive(Debug, Default)]
pub struct ServiceAdmission {
    pub network: ServiceNetwork,
    ledger: Mutex<Ledger>,
    /// Held by a write that takes addresses from its decision until the cache has it.
    writers: tokio::sync::Mutex<()>,
}

/// Why a write was refused.
#[derive(Debug)]
pub enum Refused {
    /// The body is not a Service spec (a 400, as kube-apiserver's decoding error).
    Decode(String),
    /// Field errors (a 422).
    Invalid(Vec<Cause>),
}

impl ServiceAdmission {
    pub fn new(network: ServiceNetwork) -> ServiceAdmission {
        ServiceAdmission {
            network,
            ..Default::default()
        }
    }

    /// Records a store change (`None`: deleted) of any key; ignores other kinds.
    pub fn observe(&self, key: &str, value: Option<&[u8]>) {
        let Some(held) = kind_of(key) else { return };
        let h = value.map(held).unwrap_or_default();
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(key, h);
    }

    /// Rebuilds the ledger from a full listing of the store.
    pub fn reset<'a>(&self, kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>) {
        let mut l = Ledger::default();
        for (key, value) in kvs {
            if let Some(held) = kind_of(key) {
                l.set(key, held(value));
            }
        }
        *self.ledger.lock().unwrap_or_else(|e| e.into_inner()) = l;
    }

    /// The lock a write that takes addresses holds until the cache has it.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writers.lock().await
    }

    /// Admits a Service (`object` is the whole object; its `spec` is rewritten) held by
    /// `key`. Call with the lock held and the cache caught up with the store.
    pub fn admit_service(
        &self,
        key: &str,
        object: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), Refused> {
        let decode = |v: &Value| -> Result<ServiceSpec, Refused> {
            serde_json::from_value(v.clone()).map_err(|e| {
                Refused::Decode(format!(
                    "Service in version \"v1\" cannot be handled as a Service: spec: {e}"
                ))
            })
        };
        let spec_value = match &object["spec"] {
            Value::Null => Value::Object(Default::default()),
            v => v.clone(),
        };
        let mut spec = decode(&spec_value)?;
        let old_spec = match old {
            Some(o) if !o["spec"].is_null() => Some(decode(&o["spec"]).unwrap_or_default()),
            _ => None,
        };
        let owner = owner_of(key);
        let ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        let taken = TakenFor {
            ledger: &ledger,
            owner: &owner,
        };
        admit(
            &mut spec,
            old_spec.as_ref(),
            &self.network,
            &taken,
            rand::random(),
        )
        .map_err(Refused::Invalid)?;
        drop(ledger);
        object["spec"] = serde_json::to_value(&spec).map_err(|e| Refused::Decode(e.to_string()))?;
        Ok(())
    }

    /// The addresses a YusurService write would newly take (none: no lock needed).
    pub fn yusur_service_claims(object: &Value, old: Option<&Value>) -> Held {
        let bytes = |v: &Value| serde_json::to_vec(v).unwrap_or_default();
        let new = held_by_yusur_service(&bytes(object));
        let before = old
            .map(|o| held_by_yusur_service(&bytes(o)))
            .unwrap_or_default();
        Held {
            ips: new.ips.difference(&before.ips).copied().collect(),
            node_ports: Default::default(),
        }
    }

    /// Refuses a YusurService write whose new cluster IPs a `v1 Service` of another name
    /// holds (YusurServices among themselves are Ferry's controller's business). Call with
    /// the lock held and the cache caught up with the store.
    pub fn check_yusur_service(&self, key: &str, object: &Value, claims: &Held) -> Vec<Cause> {
        let owner = owner_of(key);
        let ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for ip in &claims.ips {
            let Some(holder) = ledger
                .ip_holders(*ip)
                .find(|k| k.starts_with(SERVICES) && owner_of(k) != owner)
            else {
                continue;
            };
            let field = if object["spec"]["clusterIP"].as_str() == Some(&ip.to_string()) {
                "spec.clusterIP"
            } else {
                "status.clusterIP"
            };
            out.push((
                field.to_string(),
                format!(
                    "Invalid value: \"{ip}\": provided IP is already allocated to Service {}",
                    owner_of(holder)
                ),
            ));
        }
        out
    }

    /// A copy of the ledger (tests).
    #[cfg(test)]
    pub fn ledger(&self) -> Ledger {
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
