//! A minimal OVN + OVS stack for integration tests: NB and SB `ovsdb-server`s,
//! `ovn-northd`, a local `ovsdb-server` + `ovs-vswitchd` (userspace `netdev` datapath) and
//! `ovn-controller`, all child processes in a temp dir, killed by PID on drop. The
//! integration bridge gets a unique name so tests never touch another stack's `br-int`.
//! (Flags follow /work/shared/design/ovn-scenarios-recipe.sh.)

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub struct OvnStack {
    pub dir: tempfile::TempDir,
    /// The integration bridge (unique per stack).
    pub bridge: String,
    pub chassis: String,
    children: Vec<(&'static str, Child)>,
}

impl OvnStack {
    pub fn nb_sock(&self) -> PathBuf {
        self.dir.path().join("nb.sock")
    }
    pub fn sb_sock(&self) -> PathBuf {
        self.dir.path().join("sb.sock")
    }
    pub fn ovs_dir(&self) -> PathBuf {
        self.dir.path().join("ovs")
    }
    pub fn ovs_sock(&self) -> PathBuf {
        self.ovs_dir().join("db.sock")
    }

    /// Starts everything and waits until ovn-controller has registered its chassis.
    pub fn start(bridge: &str, chassis: &str) -> Result<OvnStack> {
        let dir = tempfile::Builder::new().prefix("fat-ovn-").tempdir()?;
        let mut s = OvnStack {
            dir,
            bridge: bridge.to_string(),
            chassis: chassis.to_string(),
            children: Vec::new(),
        };
        let t = s.dir.path().to_path_buf();
        let r = s.ovs_dir();
        std::fs::create_dir_all(&r)?;
        for (db, schema) in [
            ("nb", "/usr/share/ovn/ovn-nb.ovsschema"),
            ("sb", "/usr/share/ovn/ovn-sb.ovsschema"),
        ] {
            tool(
                "ovsdb-tool",
                &["create", &p(&t.join(format!("{db}.db"))), schema],
            )?;
            let child = spawn(
                Command::new("ovsdb-server")
                    .arg(t.join(format!("{db}.db")))
                    .arg(format!(
                        "--remote=punix:{}",
                        p(&t.join(format!("{db}.sock")))
                    ))
                    .arg(format!("--unixctl={}", p(&t.join(format!("{db}.ctl")))))
                    .arg(format!("--log-file={}", p(&t.join(format!("{db}.log"))))),
            )?;
            s.children.push(("ovsdb-server", child));
            wait_for(&t.join(format!("{db}.sock")))?;
        }
        let northd = spawn(
            Command::new("ovn-northd")
                .env("OVN_RUNDIR", &t)
                .arg(format!("--ovnnb-db=unix:{}", p(&s.nb_sock())))
                .arg(format!("--ovnsb-db=unix:{}", p(&s.sb_sock())))
                .arg(format!("--unixctl={}", p(&t.join("northd.ctl"))))
                .arg(format!("--log-file={}", p(&t.join("northd.log")))),
        )?;
        s.children.push(("ovn-northd", northd));
        tool(
            "ovsdb-tool",
            &[
                "create",
                &p(&r.join("conf.db")),
                "/usr/share/openvswitch/vswitch.ovsschema",
            ],
        )?;
        let db = spawn(
            Command::new("ovsdb-server")
                .arg(r.join("conf.db"))
                .arg(format!("--remote=punix:{}", p(&s.ovs_sock())))
                .arg(format!("--unixctl={}", p(&r.join("db.ctl"))))
                .arg(format!("--log-file={}", p(&r.join("db.log")))),
        )?;
        s.children.push(("ovsdb-server(ovs)", db));
        wait_for(&s.ovs_sock())?;
        s.vsctl(&["--no-wait", "init"])?;
        let vswitchd = spawn(
            Command::new("ovs-vswitchd")
                .env("OVS_RUNDIR", &r)
                .env("OVS_DBDIR", &r)
                .arg(format!("unix:{}", p(&s.ovs_sock())))
                .arg(format!("--unixctl={}", p(&r.join("vswitchd.ctl"))))
                .arg(format!("--log-file={}", p(&r.join("vswitchd.log")))),
        )?;
        s.children.push(("ovs-vswitchd", vswitchd));
        s.vsctl(&[
            "--timeout=30",
            "add-br",
            bridge,
            "--",
            "set",
            "bridge",
            bridge,
            "datapath_type=netdev",
            "fail-mode=secure",
        ])?;
        s.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            &format!("external_ids:system-id={chassis}"),
            &format!("external_ids:ovn-remote=unix:{}", p(&s.sb_sock())),
            "external_ids:ovn-encap-type=geneve",
            "external_ids:ovn-encap-ip=127.0.0.1",
            "external_ids:ovn-bridge-datapath-type=netdev",
            &format!("external_ids:ovn-bridge={bridge}"),
        ])?;
        let ovnc = spawn(
            Command::new("ovn-controller")
                .env("OVN_RUNDIR", &r)
                .env("OVS_RUNDIR", &r)
                .env("OVS_DBDIR", &r)
                .arg(format!("unix:{}", p(&s.ovs_sock())))
                .arg(format!("--log-file={}", p(&r.join("ovnc.log")))),
        )?;
        s.children.push(("ovn-controller", ovnc));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s
            .sbctl(&["--columns=name", "list", "Chassis"])?
            .contains(chassis)
        {
            if Instant::now() > deadline {
                bail!("ovn-controller did not register chassis {chassis}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(s)
    }

    pub fn nbctl(&self, args: &[&str]) -> Result<String> {
        let db = format!("--db=unix:{}", p(&self.nb_sock()));
        tool("ovn-nbctl", &[&[db.as_str()], args].concat())
    }

    pub fn sbctl(&self, args: &[&str]) -> Result<String> {
        let db = format!("--db=unix:{}", p(&self.sb_sock()));
        tool("ovn-sbctl", &[&[db.as_str()], args].concat())
    }

    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        let db = format!("--db=unix:{}", p(&self.ovs_sock()));
        tool("ovs-vsctl", &[&[db.as_str()], args].concat())
    }

    /// Waits until the logical port is bound to this stack's chassis.
    pub fn wait_bound(&self, lsp: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.sbctl(&[
                "--bare",
                "--columns=chassis",
                "find",
                "Port_Binding",
                &format!("logical_port={lsp}"),
            ])?;
            if !out.trim().is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("logical port {lsp} was never bound");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The tail of a log file under the stack dir, for failure messages.
    pub fn log_tail(&self, rel: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(rel)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for OvnStack {
    fn drop(&mut self) {
        // ovs-vswitchd removes the bridge's tap device when it deletes the bridge, and the
        // userspace datapath's own device (`ovs-netdev`, which outlives a killed
        // ovs-vswitchd) when it exits with --cleanup.
        let _ = self.vsctl(&["--timeout=10", "--if-exists", "del-br", &self.bridge]);
        let ctl = self.ovs_dir().join("vswitchd.ctl");
        let _ = tool(
            "ovs-appctl",
            &["--timeout=10", "-t", &p(&ctl), "exit", "--cleanup"],
        );
        if let Some((_, vswitchd)) = self.children.iter_mut().find(|(n, _)| *n == "ovs-vswitchd") {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(vswitchd.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn spawn(cmd: &mut Command) -> Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))
}

pub fn tool(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for(path: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("{} never appeared", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
