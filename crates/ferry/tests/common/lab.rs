//! The lab end-to-end tests' shared part (`lab_e2e.rs`, `lab_chassis_e2e.rs`): `ferry lab
//! ...` run the way a user runs it, a lab started in a temporary directory with its API on
//! a free port and taken down however the test ends, and the lab's namespaces (prefixes
//! `ferry-` and `fp-`), which must all be gone afterwards. Lab names are fixed, so run these
//! tests inside `scripts/lab-isolated.sh` when another lab runs on the machine.

use std::process::{Command, Output};

/// `ferry ARGS...`, its output printed for the test log.
pub fn ferry(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run ferry");
    eprintln!(
        "$ ferry {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A program's standard output ("" if it cannot run).
pub fn text(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The rows of a `lab check` table whose PASS column says NO, each on one line: put first
/// in a failure message, since CI keeps only the start and end of a long output.
pub fn failed_rows(table: &str) -> Vec<String> {
    table
        .lines()
        .filter(|l| l.trim_end().trim_end_matches('│').split_whitespace().last() == Some("NO"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The lab's network namespaces present on the machine (hosts `ferry-*`, probe ports `fp-*`).
pub fn lab_namespaces() -> Vec<String> {
    text("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("ferry-") || n.starts_with("fp-"))
        .map(String::from)
        .collect()
}

/// A lab started by [`Lab::up`]; `ferry lab down` when dropped, unless [`Lab::down`] ran.
pub struct Lab {
    /// The lab directory (`--dir`), inside a temporary directory.
    pub dir: String,
    /// The output of `ferry lab up`.
    pub up: Output,
    down_done: bool,
    _tmp: tempfile::TempDir,
}

impl Lab {
    /// Asserts that no other lab runs here, then `ferry lab up --dir DIR --listen
    /// 127.0.0.1:PORT EXTRA...` (PORT free). Check [`Lab::is_up`] before using it.
    pub fn up(extra: &[&str]) -> Lab {
        assert!(
            lab_namespaces().is_empty(),
            "another lab runs on this machine (run inside scripts/lab-isolated.sh): {:?}",
            lab_namespaces()
        );
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp
            .path()
            .join("lab")
            .to_str()
            .expect("utf-8 path")
            .to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["lab", "up", "--dir", &dir, "--listen", &listen];
        args.extend(extra);
        let up = ferry(&args);
        Lab {
            dir,
            up,
            down_done: false,
            _tmp: tmp,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.status.success()
    }

    /// `ferry lab SUBCOMMAND --dir DIR REST...`.
    pub fn run(&self, subcommand: &str, rest: &[&str]) -> Output {
        let mut args = vec!["lab", subcommand, "--dir", &self.dir];
        args.extend(rest);
        ferry(&args)
    }

    /// `ferry lab check`, run a second time (and said so in the log) only if the first
    /// failed while OVS 3.1.0's userspace conntrack aborted an `ovs-vswitchd` of the lab
    /// (`lib/conntrack.c:1063`, fixed upstream in 3.1.3, not in Debian 12): such an abort
    /// cuts every datapath of its chassis for a few seconds, longer than a row's retries
    /// span on a loaded machine. A failure with no abort under it fails at once.
    pub fn check(&self) -> Output {
        let before = self.vswitchd_aborts();
        let first = self.run("check", &[]);
        let aborts = self.vswitchd_aborts() - before;
        if first.status.success() || aborts == 0 {
            return first;
        }
        eprintln!(
            "KNOWN FLAKE: lab check failed while ovs-vswitchd aborted {aborts} time(s); \
             rows that failed: {:#?}; checking once more",
            failed_rows(&String::from_utf8_lossy(&first.stdout))
        );
        self.run("check", &[])
    }

    /// How many times OVS 3.1.0's conntrack assertion has aborted an `ovs-vswitchd` of the
    /// lab so far (`lab check` counts the same way).
    pub fn vswitchd_aborts(&self) -> usize {
        ferry_lab::lab::vswitchd_aborts(
            &ferry_lab::lab::LabDir::new(std::path::Path::new(&self.dir)).data(),
        )
    }

    /// The lab's OVN directory (`DIR/ferry/ovn`): the central NB/SB; with a chassis per
    /// node each node's chassis under `chassis-NODE/`.
    pub fn ovn(&self) -> String {
        format!("{}/ferry/ovn", self.dir)
    }

    /// `ovn-sbctl show` of the lab's SB.
    pub fn sb_show(&self) -> String {
        text(
            "ovn-sbctl",
            &[&format!("--db=unix:{}/run/sb.sock", self.ovn()), "show"],
        )
    }

    /// `other_config:userspace-tso-enable` of the OVS database under `ovs_dir` (the lab's
    /// OVN directory or one node chassis' directory), unquoted.
    pub fn userspace_tso(&self, ovs_dir: &str) -> String {
        text(
            "ovs-vsctl",
            &[
                &format!("--db=unix:{ovs_dir}/run/db.sock"),
                "get",
                "Open_vSwitch",
                ".",
                "other_config:userspace-tso-enable",
            ],
        )
        .trim()
        .trim_matches('"')
        .to_string()
    }

    /// `ferry lab down`, twice (the second must find nothing to do and succeed too); `Err`
    /// if either failed or the lab directory is left.
    pub fn down(mut self) -> Result<(), String> {
        self.down_done = true;
        let first = self.run("down", &[]);
        let again = self.run("down", &[]);
        if !first.status.success() || !again.status.success() {
            return Err(format!("lab down: {}, then {}", first.status, again.status));
        }
        match std::path::Path::new(&self.dir).exists() {
            true => Err(format!("lab down left {}", self.dir)),
            false => Ok(()),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.down_done {
            self.run("down", &[]);
        }
    }
}
