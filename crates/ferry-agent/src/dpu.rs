//! DPU split mode (`ferry agent --mode full|dpu-host|dpu`): what each mode's agent does
//! ([`duties`]), the annotation contract between a host and its DPU ([`ANNOTATION_VF`],
//! [`desired_bindings`]), the host's admission rule while its DPU's Lease has lapsed
//! ([`admit`]), and the DPU's one OVS write ([`bind`], [`unbind`]).
//!
//! On a DPU node OVS and ovn-controller run on the SmartNIC: the host only hands the pod a
//! virtual function (VF) and the DPU puts the VF's representor on `br-int` with the pod's
//! `iface-id`. The host agent never touches OVS; the DPU agent never enters a pod. The
//! contract is written down in `docs/dpu.md`.

use std::collections::BTreeMap;
use std::path::Path;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::command::{CommandError, run, run_in_netns};

/// The Pod annotation the `dpu-host` side writes after ADD: the name of the representor
/// (the other end of the pod's VF) the DPU must bind. Removed again by DEL.
pub use ferry_api::ANNOTATION_VF;
/// The OVS `external_ids` key the DPU marks its representor ports with, so it can tell its
/// bindings from every other port when it reconciles.
pub const EXTERNAL_ID_VF: &str = "ferry-vf";
/// The namespace of the DPU agent's Lease (beside the agents' own).
pub const DPU_LEASE_NAMESPACE: &str = ferry_api::AGENT_LEASE_NAMESPACE;

/// The Lease the DPU agent of host `node` renews: `ferry-dpu-NODE`.
pub use ferry_api::dpu_lease_name;

/// How this node's agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentMode {
    /// Everything on the host (today's agent): CNI with OVS, probes, node interface.
    #[default]
    Full,
    /// The host of a DPU: CNI only (the VF into the pod), no OVS anywhere.
    DpuHost,
    /// The DPU of a host: binds representors, runs the host's probes, owns the node
    /// interface, keeps OVS.
    Dpu,
}

impl AgentMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentMode::Full => "full",
            AgentMode::DpuHost => "dpu-host",
            AgentMode::Dpu => "dpu",
        }
    }
}

impl std::fmt::Display for AgentMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AgentMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(AgentMode::Full),
            "dpu-host" => Ok(AgentMode::DpuHost),
            "dpu" => Ok(AgentMode::Dpu),
            other => Err(format!(
                "unknown agent mode {other:?} (full, dpu-host or dpu)"
            )),
        }
    }
}

/// What an agent in a mode does; [`duties`] is the one place this is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duties {
    /// CNI ADD moves the pod's end into its namespace and addresses it.
    pub plumb_pods: bool,
    /// CNI ADD/DEL/CHECK add, remove and check the OVS port of the host end.
    pub ovs_ports: bool,
    /// CNI ADD writes [`ANNOTATION_VF`] and refuses pods while the DPU's Lease has lapsed.
    pub needs_dpu: bool,
    /// Binds the representors named by [`ANNOTATION_VF`] to OVS.
    pub bind_representors: bool,
    /// Runs the NetworkProbes of the node's backends.
    pub probes: bool,
    /// Plumbs the node interface on the join subnet.
    pub node_interface: bool,
    /// May set `other_config:hw-offload` (only where OVS is).
    pub hw_offload: bool,
    /// May run the socket LB (eBPF at the cgroup root where the pods run, reading the
    /// sandboxes `ferry cni` records): only beside the pods. Two on one node would share
    /// one pin path and one node annotation.
    pub socket_lb: bool,
    /// Renews [`dpu_lease_name`] for its host.
    pub dpu_lease: bool,
}

/// The duties of `mode`.
pub fn duties(mode: AgentMode) -> Duties {
    match mode {
        AgentMode::Full => Duties {
            plumb_pods: true,
            ovs_ports: true,
            needs_dpu: false,
            bind_representors: false,
            probes: true,
            node_interface: true,
            hw_offload: true,
            socket_lb: true,
            dpu_lease: false,
        },
        AgentMode::DpuHost => Duties {
            plumb_pods: true,
            ovs_ports: false,
            needs_dpu: true,
            bind_representors: false,
            probes: false,
            node_interface: false,
            hw_offload: false,
            socket_lb: true,
            dpu_lease: false,
        },
        AgentMode::Dpu => Duties {
            plumb_pods: false,
            ovs_ports: true,
            needs_dpu: false,
            bind_representors: true,
            probes: true,
            node_interface: true,
            hw_offload: true,
            socket_lb: false,
            dpu_lease: true,
        },
    }
}

/// Why a `dpu-host` refuses a new pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no DPU agent for this node: Lease {lease} does not exist")]
    NoLease { lease: String },
    #[error(
        "the DPU agent's Lease {lease} has lapsed ({age_s} s since renewal, lasts {duration_s} s)"
    )]
    Lapsed {
        lease: String,
        age_s: i64,
        duration_s: i64,
    },
}

/// Whether a `dpu-host` on `node` may plumb a new pod, given its DPU's Lease (`None`: no
/// Lease). A Lease never renewed counts as lapsed; one without a duration lasts 0 s.
pub fn admit(node: &str, lease: Option<&LeaseSpec>, now: Timestamp) -> Result<(), Refusal> {
    let name = dpu_lease_name(node);
    let Some(spec) = lease else {
        return Err(Refusal::NoLease { lease: name });
    };
    let duration_s = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    let age_s = spec
        .renew_time
        .as_ref()
        .map(|t| now.as_second() - t.0.as_second())
        .unwrap_or(i64::MAX);
    if age_s > duration_s {
        return Err(Refusal::Lapsed {
            lease: name,
            age_s,
            duration_s,
        });
    }
    Ok(())
}

/// The representors the DPU of host `node` must bind: representor name -> the pod's
/// logical switch port (`iface-id`), from the Pods on that node that carry
/// [`ANNOTATION_VF`] and are not being deleted.
pub fn desired_bindings(pods: &[Pod], node: &str) -> BTreeMap<String, String> {
    pods.iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let rep = p.annotations().get(ANNOTATION_VF)?.trim();
            (!rep.is_empty()).then(|| {
                (
                    rep.to_string(),
                    ferry_net::port_name(
                        ferry_net::PortKind::Pod,
                        &p.namespace().unwrap_or_default(),
                        &p.name_any(),
                    ),
                )
            })
        })
        .collect()
}

/// What the DPU changes to go from `present` (its marked ports) to `desired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindPlan {
    /// (representor, iface-id) to bind (new, or bound to another iface-id).
    pub bind: Vec<(String, String)>,
    /// Representors to unbind.
    pub unbind: Vec<String>,
}

/// The plan from `present` to `desired` (both representor -> iface-id).
pub fn plan(desired: &BTreeMap<String, String>, present: &BTreeMap<String, String>) -> BindPlan {
    BindPlan {
        bind: desired
            .iter()
            .filter(|(rep, id)| present.get(*rep) != Some(*id))
            .map(|(r, i)| (r.clone(), i.clone()))
            .collect(),
        unbind: present
            .keys()
            .filter(|rep| !desired.contains_key(*rep))
            .cloned()
            .collect(),
    }
}

/// Where the DPU's OVS is.
#[derive(Debug, Clone)]
pub struct DpuOvs<'a> {
    pub db: &'a Path,
    pub bridge: &'a str,
    /// The namespace the representors live in (the DPU's), when not the caller's.
    pub netns: Option<&'a Path>,
}

fn ip_on_dpu(ovs: &DpuOvs<'_>, args: &[&str]) -> Result<String, CommandError> {
    match ovs.netns {
        Some(ns) => run_in_netns(ns, "ip", args),
        None => run("ip", args),
    }
}

/// Brings representor `rep` up and puts it on the bridge with the pod's `iface-id`, marked
/// [`EXTERNAL_ID_VF`]. Idempotent.
pub fn bind(ovs: &DpuOvs<'_>, rep: &str, iface_id: &str) -> Result<(), CommandError> {
    ip_on_dpu(ovs, &["link", "set", rep, "up"])?;
    let db = format!("--db=unix:{}", ovs.db.display());
    let id = format!("external_ids:iface-id=\"{}\"", iface_id.replace('"', ""));
    let mark = format!("external_ids:{EXTERNAL_ID_VF}=true");
    run(
        "ovs-vsctl",
        &[
            &db,
            "--timeout=30",
            "--",
            "--may-exist",
            "add-port",
            ovs.bridge,
            rep,
            "--",
            "set",
            "Interface",
            rep,
            &id,
            &mark,
        ],
    )?;
    Ok(())
}

/// Takes representor `rep` off the bridge (already gone is fine).
pub fn unbind(ovs: &DpuOvs<'_>, rep: &str) -> Result<(), CommandError> {
    let db = format!("--db=unix:{}", ovs.db.display());
    run(
        "ovs-vsctl",
        &[
            &db,
            "--timeout=30",
            "--if-exists",
            "del-port",
            ovs.bridge,
            rep,
        ],
    )?;
    Ok(())
}

/// `--hw-offload` could not be set or did not stick.
#[derive(Debug, thiserror::Error)]
pub enum HwOffloadError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("other_config:hw-offload reads back {got:?} after setting it to true")]
    NotSet { got: String },
}

/// Whether `ovs-vsctl get Open_vSwitch . other_config:hw-offload` says it is on.
pub fn hw_offload_on(get_output: &str) -> bool {
    get_output.trim().trim_matches('"') == "true"
}

/// Sets `other_config:hw-offload=true` and reads it back. ovs-vswitchd reads the key only
/// when it starts, so on a running vswitchd this takes effect at its next restart (the lab
/// and tests set it before vswitchd starts, `OvnOptions::ovs_other_config`).
pub fn enable_hw_offload(ovs_db: &Path) -> Result<(), HwOffloadError> {
    let db = format!("--db=unix:{}", ovs_db.display());
    let key = "other_config:hw-offload";
    run(
        "ovs-vsctl",
        &[
            &db,
            "set",
            "Open_vSwitch",
            ".",
            "other_config:hw-offload=true",
        ],
    )?;
    let got = run("ovs-vsctl", &[&db, "get", "Open_vSwitch", ".", key])?;
    if !hw_offload_on(&got) {
        return Err(HwOffloadError::NotSet {
            got: got.trim().to_string(),
        });
    }
    tracing::info!("other_config:hw-offload=true (vswitchd applies it when it starts)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};

    #[test]
    fn each_mode_does_its_share_and_nothing_twice() {
        let cases = [
            (
                "full",
                AgentMode::Full,
                Duties {
                    plumb_pods: true,
                    ovs_ports: true,
                    needs_dpu: false,
                    bind_representors: false,
                    probes: true,
                    node_interface: true,
                    hw_offload: true,
                    socket_lb: true,
                    dpu_lease: false,
                },
            ),
            (
                "dpu-host",
                AgentMode::DpuHost,
                Duties {
                    plumb_pods: true,
                    ovs_ports: false,
                    needs_dpu: true,
                    bind_representors: false,
                    probes: false,
                    node_interface: false,
                    hw_offload: false,
                    socket_lb: true,
                    dpu_lease: false,
                },
            ),
            (
                "dpu",
                AgentMode::Dpu,
                Duties {
                    plumb_pods: false,
                    ovs_ports: true,
                    needs_dpu: false,
                    bind_representors: true,
                    probes: true,
                    node_interface: true,
                    hw_offload: true,
                    socket_lb: false,
                    dpu_lease: true,
                },
            ),
        ];
        for (name, mode, want) in cases {
            assert_eq!(name.parse::<AgentMode>(), Ok(mode));
            assert_eq!(mode.to_string(), name);
            assert_eq!(duties(mode), want, "{name}");
        }
        // Split across host and DPU, every duty of the full agent is done exactly once.
        let (h, d, f) = (
            duties(AgentMode::DpuHost),
            duties(AgentMode::Dpu),
            duties(AgentMode::Full),
        );
        for (duty, host, dpu, full) in [
            ("plumb", h.plumb_pods, d.plumb_pods, f.plumb_pods),
            ("ovs", h.ovs_ports, d.ovs_ports, f.ovs_ports),
            ("probes", h.probes, d.probes, f.probes),
            ("socket lb", h.socket_lb, d.socket_lb, f.socket_lb),
            (
                "node iface",
                h.node_interface,
                d.node_interface,
                f.node_interface,
            ),
        ] {
            assert!(host ^ dpu, "{duty}: host {host}, dpu {dpu}");
            assert!(full, "{duty}");
        }
        assert_eq!(
            "dpu-hots".parse::<AgentMode>(),
            Err("unknown agent mode \"dpu-hots\" (full, dpu-host or dpu)".into())
        );
    }

    #[test]
    fn hw_offload_reads_back() {
        for (out, want) in [
            ("\"true\"\n", true),
            ("true", true),
            ("\"false\"", false),
            ("", false),
        ] {
            assert_eq!(hw_offload_on(out), want, "{out:?}");
        }
    }

    #[test]
    fn host_admits_pods_only_while_the_dpu_lease_is_live() {
        let now: Timestamp = "2026-11-29T03:00:00Z".parse().expect("ts");
        let lease = |ago: i64, dur: Option<i32>| LeaseSpec {
            renew_time: Some(MicroTime(now - jiff::SignedDuration::from_secs(ago))),
            lease_duration_seconds: dur,
            ..Default::default()
        };
        let name = "ferry-dpu-n1".to_string();
        let cases = [
            ("fresh", Some(lease(3, Some(10))), Ok(())),
            ("at the edge", Some(lease(10, Some(10))), Ok(())),
            (
                "lapsed",
                Some(lease(11, Some(10))),
                Err(Refusal::Lapsed {
                    lease: name.clone(),
                    age_s: 11,
                    duration_s: 10,
                }),
            ),
            ("no duration", Some(lease(0, None)), Ok(())),
            (
                "never renewed",
                Some(LeaseSpec {
                    lease_duration_seconds: Some(10),
                    ..Default::default()
                }),
                Err(Refusal::Lapsed {
                    lease: name.clone(),
                    age_s: i64::MAX,
                    duration_s: 10,
                }),
            ),
            (
                "no lease",
                None,
                Err(Refusal::NoLease {
                    lease: name.clone(),
                }),
            ),
        ];
        for (what, l, want) in cases {
            assert_eq!(admit("n1", l.as_ref(), now), want, "{what}");
        }
        assert_eq!(
            admit("n1", Some(&lease(11, Some(10))), now).map_err(|e| e.to_string()),
            Err(
                "the DPU agent's Lease ferry-dpu-n1 has lapsed (11 s since renewal, lasts 10 s)"
                    .into()
            )
        );
    }

    fn pod(ns: &str, name: &str, node: &str, vf: Option<&str>, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                annotations: vf.map(|v| BTreeMap::from([(ANNOTATION_VF.to_string(), v.into())])),
                deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn dpu_binds_the_representors_its_host_announced() {
        let pods = [
            pod("default", "a", "n1", Some("fy0000000000001"), false),
            pod("t1", "b", "n1", Some("fy0000000000002"), false),
            pod(
                "default",
                "other-node",
                "n2",
                Some("fy0000000000003"),
                false,
            ),
            pod("default", "not-plumbed-yet", "n1", None, false),
            pod("default", "blank", "n1", Some(" "), false),
            pod("default", "going", "n1", Some("fy0000000000004"), true),
        ];
        let desired = desired_bindings(&pods, "n1");
        let want: BTreeMap<String, String> = [
            (
                "fy0000000000001",
                ferry_net::port_name(ferry_net::PortKind::Pod, "default", "a"),
            ),
            (
                "fy0000000000002",
                ferry_net::port_name(ferry_net::PortKind::Pod, "t1", "b"),
            ),
        ]
        .into_iter()
        .map(|(r, i)| (r.to_string(), i))
        .collect();
        assert_eq!(desired, want);

        let m = |v: &[(&str, &str)]| -> BTreeMap<String, String> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let cases = [
            (
                "nothing yet",
                m(&[("r1", "p1")]),
                m(&[]),
                BindPlan {
                    bind: vec![("r1".into(), "p1".into())],
                    unbind: vec![],
                },
            ),
            (
                "in step",
                m(&[("r1", "p1")]),
                m(&[("r1", "p1")]),
                BindPlan::default(),
            ),
            (
                "pod gone",
                m(&[]),
                m(&[("r1", "p1")]),
                BindPlan {
                    bind: vec![],
                    unbind: vec!["r1".into()],
                },
            ),
            (
                "rebound to another pod",
                m(&[("r1", "p2")]),
                m(&[("r1", "p1")]),
                BindPlan {
                    bind: vec![("r1".into(), "p2".into())],
                    unbind: vec![],
                },
            ),
        ];
        for (what, desired, present, want) in cases {
            assert_eq!(plan(&desired, &present), want, "{what}");
        }
    }
}
