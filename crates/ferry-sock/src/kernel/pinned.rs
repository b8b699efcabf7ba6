//! A socket LB that outlives its owner: maps and cgroup links pinned in a bpffs
//! directory, adopted by the owner's next run instead of detached and attached again.
//!
//! Why: the agent owns the socket LB, and while it restarts (a crash, `kill -9`, ~1 s
//! under a supervisor) an unpinned socket LB is gone, yet the node's pods stay in the
//! socket-LB port group (the controller takes them out only when the agent's Lease
//! lapses), whose traffic skips conntrack: a ClusterIP connection DNATed by OVN then gets
//! replies that skip un-DNAT, and fails. Pinned, the hooks keep translating with the last
//! programming.
//!
//! The safety the unpinned design had (no stale data path without an agent keeping it
//! current) is kept by a liveness guard: the programs translate only while the deadline in
//! the `ferry_live` map is ahead of `bpf_ktime_get_ns`. The owner moves it forward
//! ([`SocketLb::keep_alive`]); it is set past the agent's Lease (the controller takes the
//! node's pods out of the port group when the Lease lapses), so a dead agent's node falls
//! back to OVN's load balancers, with conntrack again, a few seconds after the controller
//! noticed. The next owner swaps in maps rebuilt from the current state at its first
//! apply, so nothing stale outlives adoption either.
//!
//! Layout: `DIR/v1/` holds the seven maps (by their C names), one link per program
//! (`link_PROGRAM`) and `vpc_names`, a map only user space reads: the name the owner gave
//! each VPC number, so the next owner numbers VPCs the same way from its first write (the
//! maps are keyed by number, and a restarted agent learns its sandboxes' VPCs only as it
//! finds them again). A layout that is not ours (an older or newer binary's) is removed
//! after ours is attached, so an upgrade overlaps rather than leaves a gap.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::EbpfLoader;
use aya::maps::{Array, HashMap, Map, MapData, MapError};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, loaded_programs};
use tracing::{info, warn};

use super::{BPF_OBJECT, Inner, Outer, PROGRAMS, SocketLb, load_program, take_hash};
use crate::error::SockLbError;
use crate::kernel::MapSizes;
use crate::model::VpcId;
use crate::plan::Programmed;
use crate::wire;

/// The layout of the pins (maps and links) this binary reads and writes. Adopted maps
/// are not checked against the C structs: bump this whenever a map's key, value or type
/// changes (`wire`'s layouts), so a new binary attaches its own maps beside the old
/// layout and then removes it instead of reading maps it would misread.
pub const LAYOUT: &str = "v1";

/// Maps pinned by name under `DIR/LAYOUT/`.
const PINNED_MAPS: [&str; 7] = [
    "ferry_netns",
    "ferry_svc",
    "ferry_slots",
    "ferry_members",
    "ferry_affinity",
    "ferry_rev",
    "ferry_live",
];

/// Where and how long a pinned socket LB lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinConfig {
    /// A directory on a bpffs, one per owner (per node), e.g. `/sys/fs/bpf/ferry/NODE`.
    pub dir: PathBuf,
    /// How long the programs keep translating after the owner's last
    /// [`SocketLb::keep_alive`].
    pub ttl: Duration,
}

/// Longest VPC name [`SocketLb::set_vpc_name`] keeps (a Kubernetes object name).
pub const VPC_NAME_MAX: usize = 256;

/// VPC numbers the names map holds at most.
const VPC_NAMES: u32 = 65536;

type VpcNames = HashMap<MapData, [u8; 4], [u8; VPC_NAME_MAX]>;

/// The pinned names map, created the first time.
fn open_names(path: &Path) -> Result<VpcNames, SockLbError> {
    if !path.exists() {
        let m: VpcNames = HashMap::create(VPC_NAMES, super::NO_PREALLOC)
            .map_err(|e| SockLbError::map("vpc_names", "create", e))?;
        m.pin(path).map_err(|e| pin_err(path, e))?;
    }
    let data = MapData::from_pin(path).map_err(|e| SockLbError::map("vpc_names", "open", e))?;
    HashMap::try_from(Map::HashMap(data)).map_err(|e| SockLbError::map("vpc_names", "open", e))
}

/// What [`SocketLb::load_pinned`] found and did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Adoption {
    /// The maps were pinned by a previous owner and keep serving their programming until
    /// the first apply swaps in maps rebuilt from the caller's state.
    pub adopted: bool,
    /// Programs whose pinned link was kept as it was (same program).
    pub kept: Vec<&'static str>,
    /// Programs whose pinned link ran another program: a new link was attached first, then
    /// the old one removed.
    pub replaced: Vec<&'static str>,
    /// Programs attached for the first time.
    pub attached: Vec<&'static str>,
    /// Network namespaces found registered in the adopted maps.
    pub netns: usize,
    /// The adopted maps' deadline had passed (their owner was gone for longer than its
    /// ttl): they stay dormant, translating nothing, until the first apply replaces them.
    pub expired: bool,
    /// Other layouts' directories removed.
    pub removed_layouts: Vec<String>,
}

/// One pinned link as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    pub program: &'static str,
    pub link_id: u32,
    pub program_id: u32,
}

/// What to do with one program's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkAction {
    /// No link pinned: attach and pin.
    Attach,
    /// The pinned link runs the same program (same tag): keep it untouched.
    Keep,
    /// The pinned link runs another program (or one the kernel no longer lists): attach
    /// ours, then remove the old link (both run for a moment, which is harmless: a socket
    /// the first translated no longer matches a VIP in the second).
    Replace,
}

/// `pinned`: the tag of the program the pinned link runs (`Some(None)`: a link whose
/// program is unknown); `ours`: the tag of the program just loaded. Tags are the kernel's
/// hash of the instructions with map references zeroed, so they match across loads.
pub fn link_action(pinned: Option<Option<u64>>, ours: u64) -> LinkAction {
    match pinned {
        None => LinkAction::Attach,
        Some(Some(tag)) if tag == ours => LinkAction::Keep,
        Some(_) => LinkAction::Replace,
    }
}

/// A pinned link we hold.
pub(super) struct HeldLink {
    program: &'static str,
    link: FdLink,
    path: PathBuf,
}

/// The pins of a [`SocketLb`].
pub(super) struct Pins {
    dir: PathBuf,
    root: PathBuf,
    links: Vec<HeldLink>,
    live: Array<MapData, u64>,
    names: VpcNames,
    ttl: Duration,
}

fn pin_err(path: &Path, detail: impl std::fmt::Display) -> SockLbError {
    SockLbError::Pin {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> Result<u64, SockLbError> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_err(|e| pin_err(Path::new("CLOCK_MONOTONIC"), e))?;
    Ok((t.tv_sec() as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec() as u64))
}

/// The tag of the program a link runs, if the kernel still lists it.
fn attached_tag(link: &FdLink) -> Result<Option<u64>, SockLbError> {
    let id = link
        .info()
        .map_err(|e| pin_err(Path::new("link"), e))?
        .program_id();
    Ok(loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .map(|p| p.tag()))
}

impl Pins {
    /// Moves the guard's deadline to now + ttl.
    fn keep_alive(&mut self) -> Result<(), SockLbError> {
        let deadline = monotonic_ns()?.saturating_add(self.ttl.as_nanos() as u64);
        self.live
            .set(0, deadline, 0)
            .map_err(|e| SockLbError::map("ferry_live", "update", e))
    }

    fn states(&self) -> Vec<LinkState> {
        self.links
            .iter()
            .filter_map(|l| {
                let info = l.link.info().ok()?;
                Some(LinkState {
                    program: l.program,
                    link_id: info.id(),
                    program_id: info.program_id(),
                })
            })
            .collect()
    }
}

/// Removes a pin directory (links, maps, layouts) and reports whether there was one.
/// Links detach when the last file descriptor goes too: if nobody holds them, at once.
pub fn remove_pinned(dir: &Path) -> std::io::Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    remove_tree(dir)?;
    Ok(true)
}

/// bpffs has no recursive removal: files (pins) first, then directories.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            remove_tree(&e.path())?;
        } else {
            fs::remove_file(e.path())?;
        }
    }
    fs::remove_dir(dir)
}

impl SocketLb {
    /// Like [`SocketLb::load`], with the maps and links pinned under `pin.dir` (which must
    /// be on a bpffs), so they outlive this process. When a previous owner's pins are
    /// there, they are adopted: the maps keep serving (their netns registrations are read
    /// back into [`SocketLb::netns`]), a link running the same program is kept as it is,
    /// and the first [`SocketLb::apply`] / [`SocketLb::apply_changes`] swaps in maps
    /// rebuilt from what it is given (so it must be given everything, not a partial
    /// change). [`SocketLb::unpin`] is the clean stop; dropping a pinned `SocketLb`
    /// leaves everything attached (the liveness guard then expires `pin.ttl` after the
    /// last [`SocketLb::keep_alive`]).
    pub fn load_pinned(
        cgroup: &Path,
        sizes: MapSizes,
        pin: &PinConfig,
    ) -> Result<(SocketLb, Adoption), SockLbError> {
        let root = pin.dir.join(LAYOUT);
        fs::create_dir_all(&root).map_err(|e| pin_err(&root, e))?;
        let cgroup_dir = File::open(cgroup).map_err(|source| SockLbError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        })?;
        let mut report = Adoption {
            adopted: root.join("ferry_svc").exists(),
            ..Adoption::default()
        };
        let paths: Vec<(&'static str, PathBuf)> =
            PINNED_MAPS.iter().map(|n| (*n, root.join(n))).collect();
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries("ferry_affinity", sizes.affinity)
            .map_max_entries("ferry_rev", sizes.reverse);
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(BPF_OBJECT)
            .map_err(|e| SockLbError::Load(Box::new(e)))?;
        let mut outer = Outer::take(&mut ebpf)?;
        let affinity = take_hash(&mut ebpf, "ferry_affinity")?;
        let live_map = ebpf.take_map("ferry_live").ok_or(SockLbError::Missing {
            kind: "map",
            name: "ferry_live",
        })?;
        let live: Array<MapData, u64> =
            Array::try_from(live_map).map_err(|e| SockLbError::map("ferry_live", "open", e))?;

        // The maps a previous owner left, if all four are there; otherwise fresh ones.
        let current = match report.adopted {
            true => outer.current().ok(),
            false => None,
        };
        let (inner, netns, programmed) = match current {
            Some(inner) => {
                let netns = inner.read_netns()?;
                let (max_id, max_set) = inner.max_ids()?;
                (inner, netns, Programmed::above(max_id, max_set))
            }
            None => {
                report.adopted = false;
                let inner = Inner::create(&sizes)?;
                outer.point_at(&inner)?;
                (inner, BTreeMap::new(), Programmed::default())
            }
        };
        report.netns = netns.len();

        let mut pins = Pins {
            dir: pin.dir.clone(),
            root: root.clone(),
            links: Vec::new(),
            live,
            names: open_names(&root.join("vpc_names"))?,
            ttl: pin.ttl,
        };
        // The guard first. Adopted maps whose deadline passed stay dormant: nobody kept
        // them current for longer than the ttl, so they are not revived before the first
        // apply has replaced them.
        let old_deadline = pins.live.get(&0, 0).unwrap_or(0);
        report.expired = report.adopted && old_deadline != 0 && monotonic_ns()? > old_deadline;
        if !report.expired {
            pins.keep_alive()?;
        }
        for name in PROGRAMS {
            let program = load_program(&mut ebpf, name)?;
            let prog_err = |e| SockLbError::Program {
                name,
                source: Box::new(e),
            };
            let ours = program.info().map_err(prog_err)?.tag();
            let path = root.join(format!("link_{name}"));
            let old: Option<FdLink> = match path.exists() {
                true => Some(
                    PinnedLink::from_pin(&path)
                        .map_err(|e| pin_err(&path, e))?
                        .into(),
                ),
                false => None,
            };
            let theirs = match &old {
                Some(l) => Some(attached_tag(l)?),
                None => None,
            };
            let action = link_action(theirs, ours);
            let link = match (action, old) {
                (LinkAction::Keep, Some(old)) => {
                    program.unload().map_err(prog_err)?;
                    report.kept.push(name);
                    old
                }
                (_, old) => {
                    let id = program
                        .attach(&cgroup_dir, CgroupAttachMode::Single)
                        .map_err(prog_err)?;
                    let link: FdLink = program
                        .take_link(id)
                        .map_err(prog_err)?
                        .try_into()
                        .map_err(|e| pin_err(&path, e))?;
                    if let Some(old) = old {
                        // Ours runs already; the old link detaches when its pin and
                        // our descriptor are gone.
                        fs::remove_file(&path).map_err(|e| pin_err(&path, e))?;
                        drop(old);
                        report.replaced.push(name);
                    } else {
                        report.attached.push(name);
                    }
                    link.pin(&path).map_err(|e| pin_err(&path, e))?.into()
                }
            };
            pins.links.push(HeldLink {
                program: name,
                link,
                path,
            });
        }
        for e in fs::read_dir(&pin.dir)
            .map_err(|e| pin_err(&pin.dir, e))?
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if n != LAYOUT {
                match remove_tree(&e.path()) {
                    Ok(()) => report.removed_layouts.push(n),
                    Err(err) => {
                        warn!(path = %e.path().display(), error = %err, "socket LB: removing another layout's pins failed")
                    }
                }
            }
        }
        info!(cgroup = %cgroup.display(), dir = %pin.dir.display(), ?report, "socket LB attached (pinned)");
        Ok((
            SocketLb {
                _ebpf: ebpf,
                outer,
                inner,
                affinity,
                sizes,
                programmed,
                netns,
                stale: false,
                pins: Some(pins),
                adopted: report.adopted,
                dormant: report.expired,
            },
            report,
        ))
    }

    /// Moves the liveness guard's deadline to now + ttl (a pinned socket LB; nothing
    /// otherwise). The owner calls it well within the ttl while it runs.
    pub fn keep_alive(&mut self) -> Result<(), SockLbError> {
        match self.pins.as_mut() {
            Some(_) if self.dormant => Ok(()),
            Some(p) => p.keep_alive(),
            None => Ok(()),
        }
    }

    /// The names the owner (or a previous one) gave VPC numbers ([`SocketLb::set_vpc_name`];
    /// empty when not pinned).
    pub fn vpc_names(&self) -> BTreeMap<VpcId, String> {
        let Some(p) = &self.pins else {
            return BTreeMap::new();
        };
        p.names
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| {
                let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
                (
                    u32::from_ne_bytes(k),
                    String::from_utf8_lossy(&v[..end]).into_owned(),
                )
            })
            .collect()
    }

    /// Records the name of VPC number `vpc` with the pins (nothing when not pinned), for
    /// the next owner. Names longer than [`VPC_NAME_MAX`] bytes are refused.
    pub fn set_vpc_name(&mut self, vpc: VpcId, name: &str) -> Result<(), SockLbError> {
        let Some(p) = self.pins.as_mut() else {
            return Ok(());
        };
        if name.len() > VPC_NAME_MAX {
            return Err(SockLbError::Full {
                map: "vpc_names (name length)",
                max: VPC_NAME_MAX as u32,
            });
        }
        let mut v = [0u8; VPC_NAME_MAX];
        v[..name.len()].copy_from_slice(name.as_bytes());
        p.names
            .insert(vpc.to_ne_bytes(), v, 0)
            .map_err(|e| SockLbError::map("vpc_names", "insert", e))
    }

    /// The pinned links (empty when not pinned), as the kernel reports them.
    pub fn links(&self) -> Vec<LinkState> {
        self.pins.as_ref().map(Pins::states).unwrap_or_default()
    }

    /// The clean stop of a pinned socket LB: removes its pins and detaches its links at
    /// once (the maps go with this value). Unpinned: nothing (dropping it detaches).
    pub fn unpin(&mut self) -> Result<(), SockLbError> {
        let Some(pins) = self.pins.take() else {
            return Ok(());
        };
        for l in &pins.links {
            if let Err(e) = fs::remove_file(&l.path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(pin_err(&l.path, e));
            }
        }
        remove_tree(&pins.root).map_err(|e| pin_err(&pins.root, e))?;
        // The per-owner directory, if nothing else is in it.
        let _ = fs::remove_dir(&pins.dir);
        info!(dir = %pins.dir.display(), "socket LB unpinned and detached");
        Ok(())
    }
}

impl Outer {
    /// The inner maps the outer maps point at now.
    fn current(&self) -> Result<Inner, MapError> {
        Ok(Inner {
            netns: self.netns.get(&0, 0)?,
            services: self.services.get(&0, 0)?,
            slots: self.slots.get(&0, 0)?,
            members: self.members.get(&0, 0)?,
        })
    }
}

impl Inner {
    /// The highest service id and backend set the service map uses.
    fn max_ids(&self) -> Result<(u32, u32), SockLbError> {
        let mut max = (0, 0);
        for kv in self.services.iter() {
            let (_, v) = kv.map_err(|e| SockLbError::map("services", "read", e))?;
            let v = wire::parse_svc_value(&v);
            max = (max.0.max(v.id), max.1.max(v.set));
        }
        Ok(max)
    }

    /// The netns registrations (cookie -> VPC) the maps hold.
    fn read_netns(&self) -> Result<BTreeMap<u64, VpcId>, SockLbError> {
        let mut out = BTreeMap::new();
        for kv in self.netns.iter() {
            let (k, v) = kv.map_err(|e| SockLbError::map("netns", "read", e))?;
            out.insert(wire::parse_netns_key(&k), wire::parse_netns_value(&v));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_kept_only_when_it_runs_the_same_program() {
        let cases = [
            ("nothing pinned", None, LinkAction::Attach),
            ("same tag", Some(Some(7)), LinkAction::Keep),
            (
                "another binary's program",
                Some(Some(8)),
                LinkAction::Replace,
            ),
            (
                "program unknown to the kernel",
                Some(None),
                LinkAction::Replace,
            ),
        ];
        for (name, pinned, want) in cases {
            assert_eq!(link_action(pinned, 7), want, "{name}");
        }
    }
}
