//! Ferry's VPC-aware socket-level load balancer (issue 18, part 2).
//!
//! C BPF programs (`bpf/sock_lb.c`, built by `build.rs` with clang-14) attached to a
//! cgroup v2 rewrite a service VIP to a healthy backend at `connect()` / `sendmsg()` and
//! back at `recvmsg()` / `getpeername()`, so service traffic of Ferry pods never carries
//! the VIP and never goes through OVN's load balancer and conntrack. The VPC of a socket is
//! the VPC of its network namespace, looked up by `bpf_get_netns_cookie`: a pod in vpc2
//! connecting to vpc1's VIP is not translated (isolation stays the fabric's).
//!
//! This crate owns the programs, their maps, the pure planner ([`plan()`]) that turns the
//! desired services into the few map writes that changed, and the thin adapter
//! ([`SocketLb`]) that loads, attaches and writes. It does not watch Kubernetes or OVN and
//! does not decide health: the caller passes the healthy backends.
//!
//! # Why aya and C
//! Rust-written BPF cannot be built on this toolchain (bpf-linker needs LLVM 21+, Debian
//! 12 has 19), so the programs are C. They are loaded with aya 0.14 rather than libbpf-rs
//! because aya is pure Rust (no libbpf/libelf linked into the agent), supports BTF
//! map-of-maps (which the live resize needs) and standalone map creation, and plain
//! byte-array keys need no `unsafe`. libbpf-rs would add typed skeletons, not needed for
//! six maps whose layouts are pinned by `wire`'s tests. The crate has no `unsafe` code.
//!
//! # Wiring into the agent (`ferry agent --socket-lb`)
//! 1. At start: `SocketLb::load(cgroup2_root, MapSizes::default())`, where the root is the
//!    cgroup2 mount (`/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` on a
//!    hybrid one; [`cgroup2_mount`] finds it). Keep the `SocketLb` for the agent's life
//!    (behind a mutex); dropping it detaches the programs and the OVN LBs take over. Or
//!    `SocketLb::load_pinned` (below): the programs outlive the agent.
//! 2. CNI ADD, after the pod's port is plumbed: `netns_cookie_of_path(CNI_NETNS)` and
//!    `set_netns_vpc(cookie, vpc_id)`, with one `VpcId` per Ferry VPC chosen by the agent
//!    (e.g. an index kept in its state; the same numbers go into [`ServiceKey::vpc`]).
//!    Record the cookie with the sandbox. CNI DEL: `remove_netns(cookie)`. On agent
//!    restart without pins the maps start empty: re-run `set_netns_vpc` for every live
//!    sandbox before the first `apply`; [`SocketLb::netns`] lists what is registered for
//!    a repair pass.
//! 3. Whenever the controller's Endpoints change (the same healthy set that goes into the
//!    OVN LBs, probe flips included): build a [`Desired`] for every service port of every
//!    VPC that has pods on this node, `backends` = ready endpoints (target port),
//!    `affinity_timeout_s` from `sessionAffinityConfig.clientIP.timeoutSeconds` (0 when
//!    affinity is None), and call `apply(&desired)`; or, when the event names the
//!    services it touched, `apply_changes` with just those (`None` = deleted). Only
//!    changed services are written. [`ApplyReport::rejected`] lists services that did not
//!    fit: log them, and to grow instead of refusing,
//!    `resize(lb.sizes().grown_for(&report.rejected))` and apply again (they keep their
//!    previous programming meanwhile). A service with no ready endpoint is left out of
//!    the maps, so the socket keeps the VIP and OVN answers it as for any other client.
//! 4. OVN's load balancers stay programmed for every other client (VMs, nodes, EIPs).
//! 5. `apply` of 10k services takes a few hundred ms of `bpf()` calls: call it from a
//!    blocking task (`spawn_blocking`), not on the async runtime. `apply_changes` with
//!    just the services an event touched costs well under a millisecond.
//!
//! # Lifetime, restarts, several agents on one host
//! Two ways to own the programs and maps:
//! - [`SocketLb::load`]: they live as long as the `SocketLb`; dropping it (or the agent's
//!   death) detaches the hooks and OVN's load balancers serve the pods.
//! - [`SocketLb::load_pinned`] (what the agent uses when `/sys/fs/bpf` is a bpffs): the
//!   maps and the cgroup links are pinned under a per-node directory
//!   (`/sys/fs/bpf/ferry/NODE/v1/`, see [`kernel::pinned`](crate::PinConfig)), so they
//!   outlive the process: an agent killed with `kill -9` leaves its pods translated, and
//!   the next agent adopts the pins instead of detaching and attaching again.
//!
//! Why pin, when the unpinned design detached "by design": while the agent restarts
//! (~1 s under a supervisor) its pods stay in the socket-LB port group (the controller
//! takes them out only when the agent's Lease lapses), whose traffic skips conntrack;
//! with the hooks gone, a ClusterIP connection is DNATed by OVN and the reply from a
//! member backend skips un-DNAT, so it fails (4-11 failed requests per `kill -9` of an
//! agent in `ferry lab faults`). The reason for detaching is kept as a **liveness guard**:
//! if the agent is gone for good, health updates stop, and a pinned data path would keep
//! sending new connections to backends that may have died. The programs translate only
//! while the deadline in the `ferry_live` map (`bpf_ktime_get_ns`, `CLOCK_MONOTONIC`) is
//! ahead; the agent moves it to now + ttl every second ([`SocketLb::keep_alive`]), with
//! ttl = its Lease's duration + 5 s. The controller takes a dead agent's pods out of the
//! port group when the Lease lapses; 5 s later the hooks stop translating and OVN's load
//! balancers, with conntrack again, serve those pods. Reverse translation goes on past the
//! deadline (sockets already translated keep seeing the VIP). Pins found past their
//! deadline ([`Adoption::expired`]) stay dormant until the first apply has replaced the
//! maps: nobody kept them current, so they are not revived before.
//!
//! Adoption ([`Adoption`]): a link whose program has the same tag as the one just loaded
//! (the kernel's hash of the instructions, map references zeroed) is kept untouched (same
//! link id, no detach); one running another program is replaced by attaching the new
//! link first and removing the old one after (both run for a moment, harmlessly: a socket
//! the first translated no longer matches a VIP in the second). The adopted maps keep
//! serving; their netns registrations are read back ([`SocketLb::netns`]), and
//! `vpc_names` (a user-space map pinned beside them, [`SocketLb::set_vpc_name`]) gives
//! the new owner the previous VPC numbering before any sandbox has registered again. The
//! first apply replaces the adopted maps with maps built from the caller's state (so the
//! caller must give it everything, not a partial change): its ids are above the adopted
//! ones, and the first new slot and member maps carry every adopted entry too, so while
//! the four maps are swapped one by one a service found in either generation finds its
//! backends; a second rebuild then drops the old entries. [`SocketLb::unpin`] is the
//! clean stop (the agent's SIGTERM): pins removed, links detached. [`remove_pinned`] is
//! the backstop (`ferry lab down`).
//!
//! The cost of a restart of an unpinned socket LB: ClientIP affinity starts over, and
//! sockets opened before it see the backend address in `getpeername`/`recvfrom` (an
//! in-flight UDP exchange may need a retry). Pinned, affinity entries survive (an entry
//! whose service id changed at the replacement fails its membership check and is drawn
//! again). Established TCP connections are unaffected either way (they are connected to
//! the backend).
//!
//! Several agents on one host (the lab) may each attach their own `SocketLb` at the same
//! cgroup: the kernel runs every attached set, and each translates only the namespaces
//! registered with it; a socket already translated by one no longer matches a VIP in the
//! next.

mod error;
mod kernel;
pub mod maglev;
mod model;
pub mod plan;
pub mod wire;

pub use error::SockLbError;
pub use kernel::pinned::{
    Adoption, LAYOUT, LinkAction, LinkState, PinConfig, VPC_NAME_MAX, link_action, remove_pinned,
};
pub use kernel::{
    ApplyReport, MapSizes, SocketLb, current_netns_cookie, netns_cookie_of, netns_cookie_of_path,
};
pub use model::{Algorithm, Backend, Desired, Protocol, ServiceKey, ServiceSpec, VpcId};
pub use plan::{
    Capacity, MapOp, Plan, Programmed, ProgrammedService, RejectReason, Rejected, Usage, plan,
    plan_changes,
};

/// Where the cgroup v2 hierarchy is mounted (from `/proc/self/mountinfo`): `/sys/fs/cgroup`
/// on a unified host, often `/sys/fs/cgroup/unified` on a hybrid one.
pub fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_mount_in(&info)
}

/// [`cgroup2_mount`] over the text of a mountinfo file.
pub fn cgroup2_mount_in(mountinfo: &str) -> Option<std::path::PathBuf> {
    mountinfo.lines().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        (fstype == "cgroup2").then(|| left.split_whitespace().nth(4).map(Into::into))?
    })
}

/// The agent keeps one `SocketLb` behind a mutex and calls it from blocking tasks.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<SocketLb>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup2_mount_is_found_on_hybrid_and_unified_hosts() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw\n";
        let unified =
            "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        let none = "22 1 0:21 / /proc rw - proc proc rw\n";
        assert_eq!(
            cgroup2_mount_in(hybrid),
            Some("/sys/fs/cgroup/unified".into())
        );
        assert_eq!(cgroup2_mount_in(unified), Some("/sys/fs/cgroup".into()));
        assert_eq!(cgroup2_mount_in(none), None);
    }
}
