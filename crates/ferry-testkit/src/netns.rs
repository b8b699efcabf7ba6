//! Network namespaces, host links and child processes a test creates, removed (by name
//! or PID) when their guard drops, also when the test fails. Names come from [`unique`],
//! so two test processes (or a lab) never touch each other's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Result;

use crate::tool;

/// A name unique to this test process: `ft-<pid>-<tag>`. Keep `tag` short where the name
/// becomes an interface (15 bytes at most).
pub fn unique(tag: &str) -> String {
    format!("ft-{}-{tag}", std::process::id())
}

/// A named network namespace (`ip netns add`, loopback up), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// The namespace's name (`/run/netns/NAME`).
    pub name: String,
}

impl Netns {
    /// Creates the namespace; fails if it exists (it is then not ours).
    pub fn add(name: &str) -> Result<Netns> {
        tool("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `/var/run/netns/NAME`, what `setns` and CNI's `CNI_NETNS` take.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    /// `ip -n NAME ARGS...`; its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        tool("ip", &[&["-n", self.name.as_str()], args].concat())
    }

    /// `ip netns exec NAME ARGS...`; its stdout.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        tool(
            "ip",
            &[&["netns", "exec", self.name.as_str()], args].concat(),
        )
    }

    /// Starts a long-running process inside the namespace, its output to `log` (or
    /// nowhere); killed by PID when the guard drops.
    pub fn spawn(&self, args: &[&str], log: Option<&Path>) -> Result<ChildGuard> {
        let (out, err) = match log {
            Some(p) => {
                let f = std::fs::File::create(p)?;
                (Stdio::from(f.try_clone()?), Stdio::from(f))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        Ok(ChildGuard(child))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = tool("ip", &["netns", "del", &self.name]);
    }
}

/// A link in the test's namespace deleted on drop ("already gone" is fine: deleting one
/// veth end removes its peer).
#[derive(Debug)]
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process killed (by PID, through `Child`) and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `f` on a thread that has entered the namespace at `path`, as a process started
/// inside that namespace would: every tool `f` runs is in it too (a child inherits the
/// namespace of the thread that starts it). The test's own threads stay where they are.
pub fn run_inside<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let file = std::fs::File::open(path)?;
    let handle = std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| anyhow::anyhow!("setns: {e}"))?;
        Ok::<T, anyhow::Error>(f())
    });
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("thread inside the namespace panicked"))?
}

/// Whether a link of that name exists in the test's namespace.
pub fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .is_ok_and(|o| o.status.success())
}
