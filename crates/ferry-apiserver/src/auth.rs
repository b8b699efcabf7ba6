//! Who is calling: bearer tokens mapped to users and groups.
//!
//! The data dir's `tokens.json` (mode 0600, kept across restarts) holds the tokens of the
//! fixed identities and of each node agent; `serviceaccount-tokens.json` holds the tokens
//! minted through the TokenRequest API (`kubectl create token`). What each identity may do
//! is RBAC's business ([`crate::rbac`]), not this module's:
//!
//! | token        | user                                                  | groups |
//! |--------------|-------------------------------------------------------|--------|
//! | `admin`      | `ferry:admin`                                          | `system:masters` |
//! | `controller` | `system:serviceaccount:ferry-system:ferry-controller` | the ServiceAccount groups |
//! | `agent`      | `system:serviceaccount:ferry-system:ferry-agent`      | the ServiceAccount groups |
//! | `embedded`   | `system:ferry:embedded-controllers`                   | |
//! | `nodes[N]`   | `system:node:N`                                        | `system:nodes` |
//!
//! The controller and agent identities are the ServiceAccounts `deploy/rbac.yaml` binds, so
//! the embedded server enforces exactly what a real cluster would grant them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::rbac::{AUTHENTICATED, MASTERS, UserInfo};

/// The namespace of Ferry's own ServiceAccounts (as `deploy/rbac.yaml` names it).
pub const SYSTEM_NAMESPACE: &str = "ferry-system";
/// The user of the embedded controllers (scheduler, workloads, endpoints): what
/// kube-controller-manager and kube-scheduler do on a real cluster.
pub const EMBEDDED_USER: &str = "system:ferry:embedded-controllers";
/// The administrator's user name.
pub const ADMIN_USER: &str = "ferry:admin";

/// The tokens of the fixed identities and of each node, kept in `DIR/tokens.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub admin: String,
    pub controller: String,
    /// The ServiceAccount `ferry-system/ferry-agent` (what a DaemonSet agent runs as);
    /// `ferry up` gives each of its agents a node identity instead.
    pub agent: String,
    /// The embedded controllers (added after the first three: generated when missing).
    #[serde(default)]
    pub embedded: String,
    /// Node name -> token of `system:node:NAME`.
    #[serde(default)]
    pub nodes: BTreeMap<String, String>,
}

/// A token minted for a ServiceAccount through the TokenRequest API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccountToken {
    pub namespace: String,
    pub name: String,
    /// The ServiceAccount's uid when minted: a token outlives neither its ServiceAccount nor
    /// a new one of the same name.
    pub uid: String,
    /// Unix seconds.
    pub expires: i64,
}

/// Authenticates bearer tokens; mints node and ServiceAccount tokens.
#[derive(Debug)]
pub struct Authenticator {
    dir: PathBuf,
    tokens: RwLock<Tokens>,
    service_accounts: RwLock<HashMap<String, ServiceAccountToken>>,
}

impl Authenticator {
    /// Loads the tokens of a data dir, creating what is missing.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Authenticator> {
        let path = dir.join("tokens.json");
        let loaded = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<Tokens>(&text).ok());
        let mut tokens = loaded.clone().unwrap_or_else(|| Tokens {
            admin: random_token(),
            controller: random_token(),
            agent: random_token(),
            embedded: random_token(),
            nodes: BTreeMap::new(),
        });
        if tokens.embedded.is_empty() {
            tokens.embedded = random_token();
        }
        if loaded
            .as_ref()
            .is_none_or(|l| l.embedded != tokens.embedded)
        {
            save(&path, &tokens)?;
        }
        let service_accounts = std::fs::read_to_string(dir.join("serviceaccount-tokens.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        Ok(Authenticator {
            dir: dir.to_path_buf(),
            tokens: RwLock::new(tokens),
            service_accounts: RwLock::new(service_accounts),
        })
    }

    /// An authenticator over fixed tokens that persists nothing (tests).
    #[cfg(test)]
    pub fn fixed(tokens: Tokens) -> Authenticator {
        Authenticator {
            dir: PathBuf::new(),
            tokens: RwLock::new(tokens),
            service_accounts: Default::default(),
        }
    }

    pub fn tokens(&self) -> Tokens {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The token of `system:node:NODE`, minted (and saved) on first use.
    pub fn node_token(&self, node: &str) -> std::io::Result<String> {
        let mut t = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        if let Some(tok) = t.nodes.get(node) {
            return Ok(tok.clone());
        }
        let tok = random_token();
        t.nodes.insert(node.to_string(), tok.clone());
        save(&self.dir.join("tokens.json"), &t)?;
        Ok(tok)
    }

    /// Mints a token for ServiceAccount `namespace/name` (uid `uid`) valid until `expires`
    /// (unix seconds); expired tokens are dropped from the file as it is rewritten.
    pub fn mint_service_account_token(
        &self,
        sa: ServiceAccountToken,
        now: i64,
    ) -> std::io::Result<String> {
        let tok = random_token();
        let mut map = self
            .service_accounts
            .write()
            .unwrap_or_else(|e| e.into_inner());
        map.retain(|_, t| t.expires > now);
        map.insert(tok.clone(), sa);
        let text = serde_json::to_string(&*map).map_err(std::io::Error::other)?;
        write_private(
            &self.dir.join("serviceaccount-tokens.json"),
            text.as_bytes(),
        )?;
        Ok(tok)
    }

    /// The identity an `Authorization: Bearer ...` header carries. A ServiceAccount token
    /// is valid until it expires and while `sa_uid(namespace, name)` gives the uid it was
    /// minted for.
    pub fn authenticate(
        &self,
        header: Option<&str>,
        now: i64,
        sa_uid: impl Fn(&str, &str) -> Option<String>,
    ) -> Option<UserInfo> {
        let token = header?.strip_prefix("Bearer ")?.trim();
        if token.is_empty() {
            return None;
        }
        {
            let t = self.tokens.read().unwrap_or_else(|e| e.into_inner());
            if let Some(u) = static_identity(&t, token) {
                return Some(u);
            }
        }
        let sa = self
            .service_accounts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()?;
        (sa.expires > now && sa_uid(&sa.namespace, &sa.name).as_deref() == Some(&sa.uid))
            .then(|| UserInfo::service_account(&sa.namespace, &sa.name, &sa.uid))
    }
}

/// The identity of one of the fixed tokens (see the table at the top).
fn static_identity(t: &Tokens, token: &str) -> Option<UserInfo> {
    let plain = |name: &str, groups: &[&str]| UserInfo {
        name: name.to_string(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..Default::default()
    };
    if token == t.admin {
        return Some(plain(ADMIN_USER, &[MASTERS, AUTHENTICATED]));
    }
    if token == t.controller {
        return Some(UserInfo::service_account(
            SYSTEM_NAMESPACE,
            "ferry-controller",
            "",
        ));
    }
    if token == t.agent {
        return Some(UserInfo::service_account(
            SYSTEM_NAMESPACE,
            "ferry-agent",
            "",
        ));
    }
    if !t.embedded.is_empty() && token == t.embedded {
        return Some(plain(EMBEDDED_USER, &[AUTHENTICATED]));
    }
    t.nodes
        .iter()
        .find(|(_, tok)| tok.as_str() == token)
        .map(|(node, _)| UserInfo::node(node))
}

fn save(path: &Path, tokens: &Tokens) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(tokens).map_err(std::io::Error::other)?;
    write_private(path, text.as_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens {
            admin: "a".into(),
            controller: "c".into(),
            agent: "g".into(),
            embedded: "e".into(),
            nodes: BTreeMap::from([("node1".to_string(), "n1".to_string())]),
        }
    }

    #[test]
    fn tokens_map_to_users_and_groups() {
        let auth = Authenticator::fixed(tokens());
        let who = |h: Option<&str>| {
            auth.authenticate(h, 0, |_, _| None)
                .map(|u| (u.name, u.groups))
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cases = [
            (
                Some("Bearer a"),
                Some((
                    "ferry:admin".to_string(),
                    s(&["system:masters", "system:authenticated"]),
                )),
            ),
            (
                Some("Bearer c"),
                Some((
                    "system:serviceaccount:ferry-system:ferry-controller".to_string(),
                    s(&[
                        "system:serviceaccounts",
                        "system:serviceaccounts:ferry-system",
                        "system:authenticated",
                    ]),
                )),
            ),
            (
                Some("Bearer e"),
                Some((EMBEDDED_USER.to_string(), s(&["system:authenticated"]))),
            ),
            (
                Some("Bearer n1"),
                Some((
                    "system:node:node1".to_string(),
                    s(&["system:nodes", "system:authenticated"]),
                )),
            ),
            (Some("Bearer nope"), None),
            (Some("Bearer "), None),
            (Some("Basic a"), None),
            (None, None),
        ];
        for (header, want) in cases {
            assert_eq!(who(header), want, "{header:?}");
        }
    }

    #[test]
    fn service_account_tokens_expire_and_die_with_their_service_account() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Authenticator::load_or_create(dir.path()).unwrap();
        let tok = auth
            .mint_service_account_token(
                ServiceAccountToken {
                    namespace: "t1".into(),
                    name: "default".into(),
                    uid: "u1".into(),
                    expires: 100,
                },
                0,
            )
            .unwrap();
        let header = format!("Bearer {tok}");
        let live = |ns: &str, n: &str| (ns == "t1" && n == "default").then(|| "u1".to_string());
        let who = auth.authenticate(Some(&header), 99, live).map(|u| u.name);
        assert_eq!(who.as_deref(), Some("system:serviceaccount:t1:default"));
        assert_eq!(auth.authenticate(Some(&header), 100, live), None, "expired");
        let recreated = |_: &str, _: &str| Some("u2".to_string());
        assert_eq!(
            auth.authenticate(Some(&header), 1, recreated),
            None,
            "new uid"
        );
        assert_eq!(
            auth.authenticate(Some(&header), 1, |_, _| None),
            None,
            "deleted"
        );
        // Kept across restarts, as node tokens are.
        let n1 = auth.node_token("node1").unwrap();
        let again = Authenticator::load_or_create(dir.path()).unwrap();
        assert_eq!(again.node_token("node1").unwrap(), n1);
        let who = again.authenticate(Some(&header), 99, live).map(|u| u.name);
        assert_eq!(who.as_deref(), Some("system:serviceaccount:t1:default"));
    }
}
