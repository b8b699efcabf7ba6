//! The hand-off between `ferry cni` (a short-lived process the container runtime runs)
//! and the agent's socket LB (a long-lived one): at ADD the plugin writes one small JSON
//! file per sandbox into a directory (`/run/ferry/sandboxes` by default, the network
//! config's `sandboxDir`), with the netns cookie it measured while the namespace surely
//! existed; DEL removes it. The agent reads the directory, so a sandbox added while the
//! agent was down or before `--socket-lb` was switched on is found at its next start.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where `ferry cni` records sandboxes and `ferry agent --socket-lb` reads them.
pub const DEFAULT_SANDBOX_DIR: &str = "/run/ferry/sandboxes";

/// One pod sandbox on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// `SO_NETNS_COOKIE` of the sandbox's network namespace.
    pub cookie: u64,
    /// `CNI_NETNS` at ADD.
    pub netns: PathBuf,
    pub namespace: String,
    pub name: String,
}

/// The record's file for a container id; `None` for an id that is not a plain file name.
pub fn record_path(dir: &Path, container_id: &str) -> Option<PathBuf> {
    let ok = !container_id.is_empty()
        && container_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !container_id.starts_with('.');
    ok.then(|| dir.join(format!("{container_id}.json")))
}

/// Writes the record (atomically: a temporary file renamed into place).
pub fn write(dir: &Path, container_id: &str, rec: &SandboxRecord) -> io::Result<()> {
    let path = record_path(dir, container_id).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("container id {container_id:?} is not a file name"),
        )
    })?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(rec).map_err(io::Error::other)?)?;
    std::fs::rename(&tmp, &path)
}

/// Removes the record; a missing one is fine (DEL may run twice).
pub fn remove(dir: &Path, container_id: &str) -> io::Result<()> {
    let Some(path) = record_path(dir, container_id) else {
        return Ok(());
    };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Every record in `dir` by container id (unreadable files are skipped: a write may be in
/// progress; the next read sees it).
pub fn read_all(dir: &Path) -> Vec<(String, SandboxRecord)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, SandboxRecord)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
            let rec = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((name, rec))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_odd_container_ids_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = SandboxRecord {
            cookie: u64::MAX - 7,
            netns: "/var/run/netns/cni-1".into(),
            namespace: "default".into(),
            name: "web".into(),
        };
        write(dir.path(), "abc-1_2.x", &rec).expect("write");
        assert_eq!(
            read_all(dir.path()),
            vec![("abc-1_2.x".to_string(), rec.clone())]
        );
        for bad in ["", "../etc", "a/b", ".hidden"] {
            assert!(write(dir.path(), bad, &rec).is_err(), "{bad:?}");
        }
        remove(dir.path(), "abc-1_2.x").expect("remove");
        remove(dir.path(), "abc-1_2.x").expect("remove twice");
        assert_eq!(read_all(dir.path()), vec![]);
        assert_eq!(read_all(&dir.path().join("missing")), vec![]);
    }
}
