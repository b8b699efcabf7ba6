//! `v1 Service` admission: what kube-apiserver's Service registry does before a Service is
//! stored (defaults, validation, cluster IPs from the service CIDR, node ports), so that
//! `kubectl expose` on the embedded server gives what it gives on a real cluster.
//!
//! The decisions are pure ([`admit`] over a [`Ledger`] of who holds what); this module's
//! [`ServiceAdmission`] is the thin part the write path calls. The ledger follows the
//! store (the cache feed records every Service and YusurService put or delete, and a
//! re-list rebuilds it), so it survives restarts without a store of its own. A write
//! decides and reserves its addresses in one step under the ledger's lock and keeps the
//! reservation until its write is in the ledger (or failed), so two concurrent creates
//! never get the same address, while the store still commits concurrent writes together.
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
    Held, Ledger, ServiceNetwork, Taken, TakenFor, allocate, held_by_service, held_by_spec,
    held_by_yusur_service, held_by_yusur_service_value, owner_of,
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

/// The write path's view: the service network and the ledger.
#[derive(Debug, Default)]
pub struct ServiceAdmission {
    pub network: ServiceNetwork,
    ledger: Mutex<Ledger>,
}

/// Addresses a write in flight reserved; released when dropped, which the write path does
/// once the write is in the cache (so in the ledger) or failed.
#[derive(Debug)]
pub struct Reservation<'a> {
    admission: &'a ServiceAdmission,
    token: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.admission.ledger().release(self.token);
    }
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
        self.ledger().set(key, h);
    }

    /// Rebuilds the ledger from a full listing of the store.
    pub fn reset<'a>(&self, kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>) {
        let mut l = Ledger::default();
        for (key, value) in kvs {
            if let Some(held) = kind_of(key) {
                l.set(key, held(value));
            }
        }
        let mut ledger = self.ledger();
        // Reservations of writes in flight stay: they end with their writes.
        l.pending = std::mem::take(&mut ledger.pending);
        l.next_token = ledger.next_token;
        *ledger = l;
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a Service (`object` is the whole object; its `spec` is rewritten) held by
    /// `key`, reserving its addresses until the reservation is dropped.
    pub fn admit_service(
        &self,
        key: &str,
        object: &mut Value,
        old: Option<&Value>,
    ) -> Result<Reservation<'_>, Refused> {
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
        let mut ledger = self.ledger();
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
        let token = ledger.reserve(key, held_by_spec(&spec));
        drop(ledger);
        let reservation = Reservation {
            admission: self,
            token,
        };
        object["spec"] = serde_json::to_value(&spec).map_err(|e| Refused::Decode(e.to_string()))?;
        Ok(reservation)
    }

    /// Refuses a YusurService write whose new cluster IPs a `v1 Service` of another name
    /// holds or reserved (YusurServices among themselves are Ferry's controller's
    /// business); otherwise reserves them until the reservation is dropped.
    pub fn admit_yusur_service(
        &self,
        key: &str,
        object: &Value,
        old: Option<&Value>,
    ) -> Result<Option<Reservation<'_>>, Vec<Cause>> {
        let new = held_by_yusur_service_value(object);
        let before = old.map(held_by_yusur_service_value).unwrap_or_default();
        if new.ips.is_subset(&before.ips) {
            return Ok(None);
        }
        let owner = owner_of(key);
        let mut ledger = self.ledger();
        let mut out = Vec::new();
        for ip in new.ips.difference(&before.ips) {
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
        if !out.is_empty() {
            return Err(out);
        }
        let token = ledger.reserve(key, new);
        Ok(Some(Reservation {
            admission: self,
            token,
        }))
    }

    /// A copy of the ledger (tests).
    #[cfg(test)]
    pub fn ledger_copy(&self) -> Ledger {
        self.ledger().clone()
    }
}
