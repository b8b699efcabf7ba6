//! `DIR/state.json`: every namespace, link, OVS port and process the lab created, so that
//! teardown removes exactly those, also after a crash and when run twice.
//!
//! Each change is a read-modify-write of the whole file under an exclusive `flock` on
//! `DIR/state.lock`, written to a temporary file and renamed into place, so concurrent
//! writers (threads or processes) never lose each other's records and a crash never
//! leaves a half-written file. Resources are recorded *before* they are created, so a
//! crash between the two leaves a record of something that may not exist; teardown treats
//! "already gone" as success.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::process::ProcessRecord;

/// A link (network interface) the lab created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// Interface name.
    pub name: String,
    /// The namespace it lives in; `None` = the root namespace.
    pub netns: Option<String>,
}

/// A port the lab added to an OVS bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OvsPortRecord {
    /// The OVS database socket (`DIR/run/ovs.sock`).
    pub db_sock: PathBuf,
    /// The bridge.
    pub bridge: String,
    /// The port name.
    pub port: String,
}

/// A lab host, so that `ferry lab exec NAME` and `ferry lab status` can find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// The host's name.
    pub name: String,
    /// Its namespace.
    pub netns: String,
    /// `eth0`'s address with prefix.
    pub ip_cidr: String,
    /// `eth0`'s MAC.
    pub mac: String,
    /// The OVN logical switch port it is bound to.
    pub iface_id: String,
    /// The bridge-side interface / OVS port.
    pub port: String,
}

/// The contents of `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    /// Network namespaces, in creation order.
    #[serde(default)]
    pub netns: Vec<String>,
    /// Links, in creation order.
    #[serde(default)]
    pub links: Vec<LinkRecord>,
    /// OVS ports, in creation order.
    #[serde(default)]
    pub ovs_ports: Vec<OvsPortRecord>,
    /// Processes, in start order (a restarted daemon keeps its place).
    #[serde(default)]
    pub processes: Vec<ProcessRecord>,
    /// Hosts (a description; their resources are the records above).
    #[serde(default)]
    pub hosts: Vec<HostRecord>,
}

impl LabState {
    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.netns.is_empty()
            && self.links.is_empty()
            && self.ovs_ports.is_empty()
            && self.processes.is_empty()
            && self.hosts.is_empty()
    }

    /// The host of that name.
    pub fn host(&self, name: &str) -> Option<&HostRecord> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// Handle on a lab directory's `state.json`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// Opens (creating the directory if needed) the registry of the lab in `dir`.
    pub fn open(dir: &Path) -> Result<Registry> {
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let dir = fs::canonicalize(dir).map_err(|e| Error::io("resolve", dir, e))?;
        Ok(Registry { dir })
    }

    /// The lab directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/state.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn lock(&self) -> Result<Flock<File>> {
        let path = self.dir.join("state.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| Error::io("lock", &path, errno.into()))
    }

    fn read_unlocked(&self) -> Result<LabState> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| Error::State { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LabState::default()),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// The current state.
    pub fn load(&self) -> Result<LabState> {
        let _lock = self.lock()?;
        self.read_unlocked()
    }

    /// Applies `f` to the state and writes it back atomically; returns what `f` returned.
    pub fn update<T>(&self, f: impl FnOnce(&mut LabState) -> T) -> Result<T> {
        let _lock = self.lock()?;
        let mut state = self.read_unlocked()?;
        let out = f(&mut state);
        let path = self.path();
        let tmp = self.dir.join("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(&state).map_err(|source| Error::State {
            path: path.clone(),
            source,
        })?;
        let mut file = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename into", &path, e))?;
        Ok(out)
    }

    /// Records a namespace (idempotent).
    pub fn add_netns(&self, name: &str) -> Result<()> {
        self.update(|s| {
            if !s.netns.iter().any(|n| n == name) {
                s.netns.push(name.to_owned());
            }
        })
    }

    /// Forgets a namespace.
    pub fn remove_netns(&self, name: &str) -> Result<()> {
        self.update(|s| s.netns.retain(|n| n != name))
    }

    /// Records a link (idempotent).
    pub fn add_link(&self, link: &LinkRecord) -> Result<()> {
        self.update(|s| {
            if !s.links.contains(link) {
                s.links.push(link.clone());
            }
        })
    }

    /// Forgets a link.
    pub fn remove_link(&self, link: &LinkRecord) -> Result<()> {
        self.update(|s| s.links.retain(|l| l != link))
    }

    /// Records an OVS port (idempotent).
    pub fn add_ovs_port(&self, port: &OvsPortRecord) -> Result<()> {
        self.update(|s| {
            if !s.ovs_ports.contains(port) {
                s.ovs_ports.push(port.clone());
            }
        })
    }

    /// Forgets an OVS port.
    pub fn remove_ovs_port(&self, port: &OvsPortRecord) -> Result<()> {
        self.update(|s| s.ovs_ports.retain(|p| p != port))
    }

    /// Records a host, replacing an earlier record of the same name.
    pub fn put_host(&self, host: &HostRecord) -> Result<()> {
        self.update(|s| match s.hosts.iter_mut().find(|h| h.name == host.name) {
            Some(h) => *h = host.clone(),
            None => s.hosts.push(host.clone()),
        })
    }

    /// Forgets a host.
    pub fn remove_host(&self, name: &str) -> Result<()> {
        self.update(|s| s.hosts.retain(|h| h.name != name))
    }

    /// Records a process, replacing an earlier record of the same name in place.
    pub fn put_process(&self, rec: &ProcessRecord) -> Result<()> {
        self.update(
            |s| match s.processes.iter_mut().find(|p| p.name == rec.name) {
                Some(p) => *p = rec.clone(),
                None => s.processes.push(rec.clone()),
            },
        )
    }

    /// Forgets the process of that name if it still has that PID.
    pub fn remove_process(&self, name: &str, pid: i32) -> Result<()> {
        self.update(|s| s.processes.retain(|p| !(p.name == name && p.pid == pid)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_are_idempotent() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open(tmp.path()).expect("open");
        assert!(reg.load().expect("load").is_empty());
        reg.add_netns("a").expect("add");
        reg.add_netns("a").expect("add twice");
        let link = LinkRecord {
            name: "v1".into(),
            netns: Some("a".into()),
        };
        reg.add_link(&link).expect("link");
        let mut p = ProcessRecord {
            name: "srv".into(),
            owner: "host:a".into(),
            pid: 10,
            argv: vec!["x".into()],
            start_time: None,
        };
        reg.put_process(&p).expect("proc");
        p.pid = 11;
        reg.put_process(&p).expect("proc again");
        let s = Registry::open(tmp.path())
            .expect("reopen")
            .load()
            .expect("load");
        assert_eq!(s.netns, vec!["a".to_owned()]);
        assert_eq!(s.links, vec![link.clone()]);
        assert_eq!(s.processes, vec![p.clone()]);
        reg.remove_process("srv", 10)
            .expect("stale pid is not removed");
        assert_eq!(reg.load().expect("load").processes.len(), 1);
        reg.remove_process("srv", 11).expect("remove");
        reg.remove_link(&link).expect("remove link");
        reg.remove_netns("a").expect("remove ns");
        assert!(reg.load().expect("load").is_empty());
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open(tmp.path()).expect("open");
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let reg = reg.clone();
                std::thread::spawn(move || {
                    for i in 0..20 {
                        reg.add_netns(&format!("ns-{t}-{i}")).expect("add");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("join");
        }
        assert_eq!(reg.load().expect("load").netns.len(), 160);
    }
}
