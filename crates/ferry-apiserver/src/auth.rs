//! Who is calling (bearer tokens) and what they may do (three fixed roles).
//!
//! `admin` may do everything; `controller` what Ferry's controllers need (no secrets, no
//! RBAC, read-only CRDs); `agent` only what a node agent needs: read its probes, pods and
//! the network objects, write probe status, pod status, nodes, its Lease and Events.

use std::collections::BTreeMap;
use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The roles a token can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Controller,
    Agent,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub role: Role,
}

/// The tokens of each role, kept in `DIR/tokens.json` (mode 0600) across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub admin: String,
    pub controller: String,
    pub agent: String,
}

impl Tokens {
    /// Loads the tokens of a data dir, creating them on first start.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Tokens> {
        let path = dir.join("tokens.json");
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(t) = serde_json::from_str(&text)
        {
            return Ok(t);
        }
        let t = Tokens {
            admin: random_token(),
            controller: random_token(),
            agent: random_token(),
        };
        let text = serde_json::to_string_pretty(&t).map_err(std::io::Error::other)?;
        write_private(&path, text.as_bytes())?;
        Ok(t)
    }

    pub fn authenticate(&self, header: Option<&str>) -> Option<Identity> {
        let token = header?.strip_prefix("Bearer ")?.trim();
        let table: BTreeMap<&str, (Role, &str)> = [
            (self.admin.as_str(), (Role::Admin, "ferry:admin")),
            (
                self.controller.as_str(),
                (Role::Controller, "ferry:controller"),
            ),
            (self.agent.as_str(), (Role::Agent, "ferry:agent")),
        ]
        .into_iter()
        .collect();
        let (role, user) = table.get(token)?;
        Some(Identity {
            user: user.to_string(),
            role: *role,
        })
    }
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn random_token() -> String {
    let mut rng = rand::rng();
    (0..40)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}

/// Whether `role` may do `verb` on `resource` (`plural` or `plural/subresource`) of `group`.
pub fn allowed(role: Role, verb: &str, group: &str, resource: &str) -> bool {
    let read = matches!(verb, "get" | "list" | "watch");
    match role {
        Role::Admin => true,
        Role::Controller => match (group, resource) {
            ("", "secrets") => false,
            ("rbac.authorization.k8s.io", _) => false,
            ("apiextensions.k8s.io", _) => read,
            _ => true,
        },
        Role::Agent => {
            let readable = [
                ("iaas.yusur.io", "networkprobes"),
                ("iaas.yusur.io", "subnets"),
                ("iaas.yusur.io", "vpcs"),
                ("iaas.yusur.io", "baremetals"),
                ("iaas.yusur.io", "vnicips"),
                ("kubevirt.io", "virtualmachineinstances"),
                ("", "pods"),
                ("", "nodes"),
                ("", "namespaces"),
                ("coordination.k8s.io", "leases"),
                // The node's cluster DNS answers Services and YusurServices.
                ("", "services"),
                ("discovery.k8s.io", "endpointslices"),
                ("iaas.yusur.io", "yusurservices"),
            ];
            if read {
                return readable.contains(&(group, resource));
            }
            matches!(
                (group, resource, verb),
                ("iaas.yusur.io", "networkprobes/status", "update" | "patch")
                    | ("", "pods/status", "update" | "patch")
                    | (
                        "kubevirt.io",
                        "virtualmachineinstances/status",
                        "update" | "patch"
                    )
                    | ("", "nodes" | "nodes/status", "create" | "update" | "patch")
                    | (
                        "coordination.k8s.io",
                        "leases",
                        "create" | "update" | "patch"
                    )
                    | ("", "events", "create" | "patch")
                    | ("events.k8s.io", "events", "create" | "patch")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_reads_probes_and_writes_only_their_status() {
        assert!(allowed(
            Role::Agent,
            "watch",
            "iaas.yusur.io",
            "networkprobes"
        ));
        assert!(allowed(
            Role::Agent,
            "patch",
            "iaas.yusur.io",
            "networkprobes/status"
        ));
        assert!(!allowed(
            Role::Agent,
            "delete",
            "iaas.yusur.io",
            "networkprobes"
        ));
        assert!(!allowed(
            Role::Agent,
            "update",
            "iaas.yusur.io",
            "yusurservices"
        ));
        assert!(!allowed(Role::Agent, "get", "", "secrets"));
    }

    #[test]
    fn controller_cannot_touch_secrets_or_write_crds() {
        assert!(!allowed(Role::Controller, "get", "", "secrets"));
        assert!(!allowed(
            Role::Controller,
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions"
        ));
        assert!(allowed(
            Role::Controller,
            "update",
            "iaas.yusur.io",
            "yusurservices/status"
        ));
    }

    #[test]
    fn only_known_tokens_authenticate() {
        let t = Tokens {
            admin: "a".into(),
            controller: "c".into(),
            agent: "g".into(),
        };
        assert_eq!(
            t.authenticate(Some("Bearer c")).map(|i| i.role),
            Some(Role::Controller)
        );
        assert!(t.authenticate(Some("Bearer nope")).is_none());
        assert!(t.authenticate(None).is_none());
    }
}
