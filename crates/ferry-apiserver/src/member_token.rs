//! Hashed bearer tokens of federation members, kept as Secrets in the store.
//!
//! A federation member dials the federation API server with a token of its own. The server
//! holds only the token's SHA-256 (the token is 256 random bits, so the hash cannot be
//! turned back into it): a Secret of type [`SECRET_TYPE`] in [`crate::SYSTEM_NAMESPACE`]
//! named after the hash ([`secret_name`]) with the hash and the member's name in its data.
//! Keeping them in the store (not in a file of one data dir) lets every API server of a
//! federation on etcd authenticate the same members, and deleting the Secret revokes the
//! token at once.
//!
//! The identity is derived, never read: `system:federation-member:NAME` in the groups
//! [`MEMBERS_GROUP`] and `system:authenticated`. Whoever may create Secrets in
//! `ferry-system` can mint such identities, but not any other (no masters, node or
//! ServiceAccount identity can come out of a Secret); what they may do is RBAC's business.

use base64::Engine;
use serde_json::Value;

use crate::rbac::{AUTHENTICATED, UserInfo};

/// The Secret type of a member token.
pub const SECRET_TYPE: &str = "federation.iaas.yusur.io/member-token";
/// The user name prefix of a member identity.
pub const MEMBER_USER_PREFIX: &str = "system:federation-member:";
/// The group every member identity is in.
pub const MEMBERS_GROUP: &str = "system:federation-members";
/// The Secret data key holding the token's SHA-256, lower-case hex.
pub const KEY_HASH: &str = "token-sha256";
/// The Secret data key holding the member's name.
pub const KEY_MEMBER: &str = "member";

/// A new token: 256 bits from the system's CSPRNG, as 64 lower-case hex digits.
pub fn new_token() -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(hex(&bytes))
}

/// The SHA-256 of `token`, lower-case hex.
pub fn hash_token(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// The name of the Secret holding the token whose hash is `hash` (its first 40 hex digits:
/// the lookup is one cache get, and the full hash is compared after it).
pub fn secret_name(hash: &str) -> String {
    format!("member-token-{}", &hash[..hash.len().min(40)])
}

/// The Secret (as JSON) that makes `token` authenticate as member `member`.
pub fn secret_manifest(member: &str, token: &str) -> Value {
    let hash = hash_token(token);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": secret_name(&hash),
            "namespace": crate::SYSTEM_NAMESPACE,
            "labels": {"federation.iaas.yusur.io/member": member},
        },
        "type": SECRET_TYPE,
        "data": {KEY_HASH: b64(&hash), KEY_MEMBER: b64(member)},
    })
}

/// The identity of member `member`.
pub fn member_identity(member: &str) -> UserInfo {
    UserInfo {
        name: format!("{MEMBER_USER_PREFIX}{member}"),
        groups: vec![MEMBERS_GROUP.to_string(), AUTHENTICATED.to_string()],
        ..Default::default()
    }
}

/// The member identity `token` authenticates as, `get` reading a stored object by key.
pub fn authenticate(token: &str, get: impl Fn(&str) -> Option<Value>) -> Option<UserInfo> {
    if token.len() != 64 {
        return None;
    }
    let hash = hash_token(token);
    let key = format!(
        "/registry/core/secrets/{}/{}",
        crate::SYSTEM_NAMESPACE,
        secret_name(&hash)
    );
    let secret = get(&key)?;
    if secret["type"] != SECRET_TYPE || secret["metadata"]["deletionTimestamp"].is_string() {
        return None;
    }
    let field = |k: &str| -> Option<String> {
        let b = base64::engine::general_purpose::STANDARD
            .decode(secret["data"][k].as_str()?)
            .ok()?;
        String::from_utf8(b).ok()
    };
    let member = field(KEY_MEMBER)?;
    let valid_name = !member.is_empty()
        && member.len() <= 253
        && member
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    (field(KEY_HASH)? == hash && valid_name).then(|| member_identity(&member))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_authenticates_as_its_member_only_through_its_secret() {
        let token = new_token().expect("random");
        assert_eq!(token.len(), 64);
        assert_ne!(token, new_token().expect("random"));
        let stored = secret_manifest("c1", &token);
        let key = |v: &Value| {
            format!(
                "/registry/core/secrets/{}/{}",
                v["metadata"]["namespace"].as_str().unwrap_or_default(),
                v["metadata"]["name"].as_str().unwrap_or_default()
            )
        };
        // The plaintext is nowhere in what is stored.
        assert!(!stored.to_string().contains(&token));
        let with = |secret: Value| move |k: &str| (k == key(&secret)).then(|| secret.clone());
        let who = authenticate(&token, with(stored.clone())).map(|u| (u.name, u.groups));
        assert_eq!(
            who,
            Some((
                "system:federation-member:c1".to_string(),
                vec![
                    "system:federation-members".to_string(),
                    "system:authenticated".to_string()
                ]
            ))
        );
        let mut other_type = stored.clone();
        other_type["type"] = "Opaque".into();
        let mut other_hash = stored.clone();
        other_hash["data"][KEY_HASH] = base64::engine::general_purpose::STANDARD
            .encode(hash_token("x"))
            .into();
        let mut bad_name = stored.clone();
        bad_name["data"][KEY_MEMBER] = base64::engine::general_purpose::STANDARD
            .encode("c1:admin")
            .into();
        let mut deleting = stored.clone();
        deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        for (name, secret) in [
            ("another type", other_type),
            ("another hash", other_hash),
            ("a name that is no member name", bad_name),
            ("being deleted", deleting),
        ] {
            assert_eq!(authenticate(&token, with(secret)), None, "{name}");
        }
        assert_eq!(
            authenticate(&new_token().expect("random"), with(stored.clone())),
            None,
            "another token"
        );
        assert_eq!(authenticate(&token[..63], with(stored)), None, "short");
    }
}
