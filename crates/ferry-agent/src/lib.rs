//! `ferry-agent` is Ferry's node agent: the CNI plugin's protocol ([`cni`]) and the
//! plumbing that puts a pod on the OVS integration bridge ([`plumb`]), and the health-probe
//! engine ([`probe`]) that runs TCP, HTTP, UDP and ICMP probes from inside VPC network
//! namespaces ([`netns`]) and reports only phase transitions.
//!
//! It must not decide which pods get which addresses (the network controller does) nor
//! program OVN logical state (the network controller does, through `ferry-ovsdb`).
//! [`node`] is the Kubernetes side: Node and Lease, NetworkProbes in, probe status out, the
//! node interface ([`node_iface`] on a real node: `ferry0` in the host's namespace, no
//! default route), and (lab mode) the [`runtime`] that runs Pods as namespaces and processes
//! ([`pod_spec`] resolves their containers, [`lab_pods`] fetches what they read from the
//! API, [`lab_image`] runs a container of an image of the lab's OCI layout chrooted into it).
//!
//! [`dpu`] is the DPU split mode (`--mode full|dpu-host|dpu`): who does what, and the
//! annotation contract between a host and its DPU; [`dpu_agent`] is the DPU's binder loop.
//!
//! [`cni_install`] puts the plugin, its conflist and its kubeconfig on a node (the
//! DaemonSet's init container) and removes them again.
//!
//! [`socket_lb`] (`ferry agent --socket-lb`) drives `ferry-sock`'s eBPF socket load balancer
//! for the pods of this node from the published Services and EndpointSlices.
//!
//! Kernel and tool access goes through narrow seams: [`command`] runs `ip`, `ethtool`,
//! `ovs-vsctl`, `nsenter`; [`netns`] creates sockets inside a namespace on a dedicated
//! thread. Neither needs `unsafe`: `nix::sched::setns` and `socket2` are safe wrappers, and
//! ICMP sockets are driven through tokio's `UdpSocket` (plain sendto/recvfrom), so the
//! workspace's `unsafe_code = "forbid"` holds here too.
//!
//! Tests: unit tables next to the code; `tests/cni_ovn.rs` (CNI against a real OVN/OVS
//! stack), `tests/node_iface_ovn.rs` (the real-node interface inside a namespace standing
//! for the host, TCP to a pod and a ClusterIP through OVN), `tests/probe_netns.rs` (probes
//! in real namespaces), `tests/dpu_sim.rs` (the DPU split mode with one simulated DPU,
//! docs/dpu.md) need root and run with
//! `cargo test -p ferry-agent -- --include-ignored`; `tests/dpu_contract.rs` (the
//! host/DPU annotation and Lease contract against Ferry's API server) needs no root;
//! `examples/probe_load.rs` prints the probe engine's CPU and memory at 5,000 probes per
//! second.

pub mod cni;
pub mod cni_install;
pub mod cni_kube;
pub mod cni_plugin;
pub mod command;
pub mod container_log;
pub mod dns;
pub mod dpu;
pub mod dpu_agent;
pub mod lab_image;
pub mod lab_pods;
pub mod mac_addr;
pub mod netns;
pub mod netns_admin;
pub mod node;
pub mod node_iface;
pub mod node_ports;
pub mod plumb;
pub mod pod_spec;
pub mod pod_status;
pub mod probe;
pub mod runtime;
pub mod socket_lb;
pub mod streaming;
pub mod watch_restart;
