//! Which programs the lab runs, and which Debian package provides each.

use std::path::Path;

/// A program the lab needs and its Debian 12 package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prerequisite {
    /// The program name looked up in `PATH` (plus `/usr/sbin`, `/sbin`).
    pub binary: &'static str,
    /// The Debian package that provides it.
    pub package: &'static str,
}

/// Every program the lab runs.
pub const PREREQUISITES: &[Prerequisite] = &[
    Prerequisite {
        binary: "ovsdb-server",
        package: "openvswitch-common",
    },
    Prerequisite {
        binary: "ovsdb-tool",
        package: "openvswitch-common",
    },
    Prerequisite {
        binary: "ovs-vswitchd",
        package: "openvswitch-switch",
    },
    Prerequisite {
        binary: "ovs-vsctl",
        package: "openvswitch-switch",
    },
    Prerequisite {
        binary: "ovn-northd",
        package: "ovn-central",
    },
    Prerequisite {
        binary: "ovn-controller",
        package: "ovn-host",
    },
    Prerequisite {
        binary: "ovn-nbctl",
        package: "ovn-common",
    },
    Prerequisite {
        binary: "ovn-sbctl",
        package: "ovn-common",
    },
    Prerequisite {
        binary: "ip",
        package: "iproute2",
    },
    Prerequisite {
        binary: "ethtool",
        package: "ethtool",
    },
    Prerequisite {
        binary: "curl",
        package: "curl",
    },
    Prerequisite {
        binary: "iperf3",
        package: "iperf3",
    },
    Prerequisite {
        binary: "python3",
        package: "python3",
    },
];

/// The prerequisites that are missing on this machine (empty = ready to run).
pub fn prerequisites() -> Vec<Prerequisite> {
    PREREQUISITES
        .iter()
        .copied()
        .filter(|p| !on_path(p.binary))
        .collect()
}

fn on_path(binary: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(Into::into))
        .any(|dir| is_executable(&dir.join(binary)))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_reported_and_a_present_one_is_not() {
        assert!(on_path("sh"));
        assert!(!on_path("ferry-lab-no-such-program"));
    }
}
