//! `ferry-agent` is Ferry's node agent: the CNI plugin's protocol ([`cni`]) and the
//! plumbing that puts a pod on the OVS integration bridge ([`plumb`]), and the health-probe
//! engine ([`probe`]) that runs TCP, HTTP, UDP and ICMP probes from inside VPC network
//! namespaces ([`netns`]) and reports only phase transitions.
//!
//! It must not decide which pods get which addresses (the network controller does) nor
//! program OVN logical state (the network controller does, through `ferry-ovsdb`). It has
//! no Kubernetes API dependency: the glue that reads pod annotations and NetworkProbes and
//! writes probe status lives with the binary.
//!
//! Kernel and tool access goes through narrow seams: [`command`] runs `ip`, `ethtool`,
//! `ovs-vsctl`, `nsenter`; [`netns`] creates sockets inside a namespace on a dedicated
//! thread.

pub mod cni;
pub mod cni_plugin;
pub mod command;
pub mod mac_addr;
pub mod netns;
pub mod plumb;
pub mod probe;
