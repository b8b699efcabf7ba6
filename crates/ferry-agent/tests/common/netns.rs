//! Network namespaces, host links and child processes that a test creates, removed (by
//! name or PID) when the guard drops, also when the test fails.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::Result;

use super::ovn_stack::tool;

/// A unique name prefix for this test process: `fat-<pid>-<tag>`.
pub fn unique(tag: &str) -> String {
    format!("fat-{}-{tag}", std::process::id())
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn add(name: &str) -> Result<Netns> {
        tool("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    /// `ip -n NAME args...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        tool("ip", &[&["-n", self.name.as_str()], args].concat())
    }

    /// `ip netns exec NAME args...`
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        tool(
            "ip",
            &[&["netns", "exec", self.name.as_str()], args].concat(),
        )
    }

    /// Spawns a long-running process inside the namespace.
    pub fn spawn(&self, args: &[&str]) -> Result<ChildGuard> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(ChildGuard(child))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = tool("ip", &["netns", "del", &self.name]);
    }
}

/// A host link deleted on drop (ignores "already gone").
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process killed (by PID) on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `f` on a thread that has entered the namespace at `path`, as a process started
/// inside that namespace would: every tool `f` runs is in it too (a child inherits the
/// namespace of the thread that starts it), and `/proc/self/ns/net` of each tool is it.
/// The test's own threads stay where they are.
pub fn run_inside<T: Send + 'static>(
    path: &std::path::Path,
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
