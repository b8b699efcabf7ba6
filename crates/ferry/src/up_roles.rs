//! `ferry up --role-processes`: after OVN, the API server (installing the CRDs and writing
//! each node's kubeconfig at start), two controller replicas, each node's agent and its
//! cluster DNS server run as child processes (`ferry apiserver`, `ferry controller`,
//! `ferry agent --lab --external-dns`, `ferry dns`) restarted
//! when they die (`ferry_lab::faults::roles`), so that
//! `ferry lab faults` can kill one role at a time. Only kube-controller-manager's jobs
//! (`ferry-embedded`) stay in this process. The metrics page is not served in this mode
//! (each role would serve its own).

use std::path::PathBuf;

use anyhow::Context;
use ferry_lab::faults::roles::{self, RoleSpec};

use crate::{Termination, UpArgs};

fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// `--flag value` pairs of the network arguments the controller takes.
fn network_argv(args: &UpArgs, tls: Option<&ferry_ovn_stack::StackTls>) -> Vec<String> {
    let n = &args.network;
    let mut v = vec![
        "--service-cidr".to_string(),
        n.service_cidr.clone(),
        "--gateway-chassis".into(),
        n.gateway_chassis.clone(),
        "--resync-s".into(),
        n.resync_s.to_string(),
    ];
    if let Some(p) = &n.eip_pool {
        v.extend(["--eip-pool".into(), p.clone()]);
    }
    if let (Some(c), Some(g)) = (n.external_cidr, n.external_gateway) {
        v.extend([
            "--external-cidr".into(),
            c.to_string(),
            "--external-gateway".into(),
            g.to_string(),
        ]);
    }
    let files = match tls {
        Some(t) => Some((
            t.client.private_key.clone(),
            t.client.certificate.clone(),
            t.pki.ca_cert.clone(),
        )),
        None => match (&n.ovn_ssl_key, &n.ovn_ssl_cert, &n.ovn_ssl_ca) {
            (Some(k), Some(c), Some(a)) => Some((k.clone(), c.clone(), a.clone())),
            _ => None,
        },
    };
    if let Some((k, c, a)) = files {
        v.extend([
            "--ovn-ssl-key".into(),
            s(&k),
            "--ovn-ssl-cert".into(),
            s(&c),
            "--ovn-ssl-ca".into(),
            s(&a),
        ]);
    }
    v.extend(dns_argv(args));
    v
}

fn dns_argv(args: &UpArgs) -> Vec<String> {
    let d = &args.network.dns;
    let mut v = vec![
        "--cluster-dns".to_string(),
        d.cluster_dns.clone(),
        "--cluster-domain".into(),
        d.cluster_domain.clone(),
    ];
    if !d.dns_upstreams.is_empty() {
        v.extend(["--dns-upstream".into(), d.dns_upstreams.join(",")]);
    }
    v
}

/// Runs the roles as processes until SIGTERM/SIGINT, then stops them. The API server
/// starts first (installing the CRDs and writing each node's kubeconfig, as `ferry up`
/// does in-process), then the rest once it answers.
pub(crate) async fn run(
    args: &UpArgs,
    stack: Option<&ferry_ovn_stack::OvnStack>,
    node_chassis: &[ferry_ovn_stack::fabric::NodeChassis],
    ovn_nb: Option<Vec<String>>,
    term: &mut Termination,
) -> anyhow::Result<()> {
    let data = args.server.data_dir.clone();
    let exe = std::env::current_exe().context("finding the ferry binary")?;
    let exe = s(&exe);
    let nodes: Vec<String> = args
        .nodes
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    let with_agents = !args.no_agent && !args.no_dataplane;
    let agent_kubeconfigs: Vec<PathBuf> = match with_agents {
        true => nodes
            .iter()
            .map(|n| data.join(format!("kubeconfig-node-{n}")))
            .collect(),
        false => Vec::new(),
    };
    let embedded_kubeconfig = data.join("kubeconfig-embedded");
    let mut specs = vec![RoleSpec {
        name: roles::APISERVER.into(),
        argv: vec![
            exe.clone(),
            "apiserver".into(),
            "--data-dir".into(),
            s(&data),
            "--listen".into(),
            args.server.listen.to_string(),
            "--service-node-port-range".into(),
            format!(
                "{}-{}",
                args.server.service_node_port_range.0, args.server.service_node_port_range.1
            ),
            "--store".into(),
            args.server.store.clone(),
            "--service-cidr".into(),
            args.network.service_cidr.clone(),
            "--install-crds".into(),
        ],
        gid: None,
    }];
    if with_agents {
        specs[0]
            .argv
            .extend(["--node-identities".into(), nodes.join(",")]);
    }
    for id in roles::CONTROLLERS {
        let mut argv = vec![
            exe.clone(),
            "controller".into(),
            "--kubeconfig".into(),
            s(&data.join("kubeconfig-controller")),
            "--identity".into(),
            id.into(),
            // The lab's replicas fail over within 3 s (issue 15's target): a 2 s Lease,
            // renewed every 250 ms on the Lease's own thread and connections. The
            // production default stays 5 s (`ferry controller --lease-duration-s`).
            "--lease-duration-s".into(),
            roles::LAB_LEASE_S.to_string(),
        ];
        if let Some(nb) = &ovn_nb {
            argv.extend(["--ovn-nb".into(), nb.join(",")]);
        }
        argv.extend(network_argv(args, stack.and_then(|s| s.tls())));
        specs.push(RoleSpec {
            name: id.into(),
            argv,
            gid: None,
        });
    }
    if with_agents {
        let central = stack.map(|s| s.bridge());
        for (i, (node, kubeconfig)) in nodes.iter().zip(&agent_kubeconfigs).enumerate() {
            let bridge = node_chassis
                .iter()
                .find(|c| &c.node == node)
                .map(|c| c.stack.bridge())
                .or_else(|| central.clone());
            let ovs_db = bridge
                .as_ref()
                .map(|b| b.db_sock.clone())
                .unwrap_or_else(|| PathBuf::from("/var/run/openvswitch/db.sock"));
            let mut argv = vec![
                exe.clone(),
                "agent".into(),
                "--lab".into(),
                "--node".into(),
                node.clone(),
                "--kubeconfig".into(),
                s(kubeconfig),
                "--state-dir".into(),
                s(&data.join("agent")),
                "--service-cidr".into(),
                args.network.service_cidr.clone(),
                "--ovs-db".into(),
                s(&ovs_db),
                "--ovs-port-type".into(),
                std::env::var("FERRY_OVS_PORT_TYPE").unwrap_or_default(),
                // The lab's agents lapse fast (as `ferry up`'s own): the faults wait for it.
                "--lease-duration-s".into(),
                ferry_api::AgentLeaseTiming::FAST
                    .duration
                    .as_secs()
                    .to_string(),
                "--lease-renew-s".into(),
                ferry_api::AgentLeaseTiming::FAST
                    .renew_every
                    .as_secs()
                    .to_string(),
            ];
            if let Some(ns) = bridge.and_then(|b| b.netns) {
                argv.extend(["--ovs-netns".into(), ns]);
            }
            if let Some((_, ip)) = args.node_external_ips.iter().find(|(n, _)| n == node) {
                argv.extend(["--external-ip".into(), ip.to_string()]);
            }
            if args.socket_lb {
                argv.push("--socket-lb".into());
            }
            if let Some(layout) = &args.lab_images {
                argv.extend(["--lab-images".into(), s(layout)]);
            }
            argv.extend(dns_argv(args));
            // The node's DNS as a role of its own, which the agent's death leaves running.
            // FERRY_LAB_DNS_ROLE=false keeps it inside the agent (for before/after runs).
            let dns = args.network.dns.address()?.is_some()
                && std::env::var("FERRY_LAB_DNS_ROLE").as_deref() != Ok("false");
            if dns {
                argv.push("--external-dns".into());
            }
            specs.push(RoleSpec {
                name: roles::agent(node),
                argv,
                gid: Some(roles::AGENT_GID_BASE + i as u32 + 1),
            });
            if dns {
                let mut argv = vec![
                    exe.clone(),
                    "dns".into(),
                    "--node".into(),
                    node.clone(),
                    "--kubeconfig".into(),
                    s(kubeconfig),
                ];
                argv.extend(dns_argv(args));
                specs.push(RoleSpec {
                    name: roles::dns(node),
                    argv,
                    gid: None,
                });
            }
        }
    }
    // The API server first; the others once it answers (their kubeconfigs exist then).
    let rest = specs.split_off(1);
    let registry = stack.map(|s| s.registry().clone());
    let data2 = data.clone();
    let running = tokio::task::spawn_blocking(move || roles::Roles::start(&data2, registry, specs))
        .await?
        .context("starting the API server")?;
    let started = std::time::Instant::now();
    loop {
        let ready = match crate::kube_client(Some(&data.join("kubeconfig"))).await {
            Ok(c) => c.apiserver_version().await.is_ok(),
            Err(_) => false,
        };
        if ready && agent_kubeconfigs.iter().all(|k| k.exists()) {
            break;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            running.stop();
            anyhow::bail!(
                "the API server did not answer within 60 s (see {})",
                roles::log_file(&data, roles::APISERVER).display()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    if let Some(ip) = args.network.dns.address()? {
        crate::reserve_cluster_dns(&data, ip).await?;
    }
    for spec in rest {
        running
            .add(spec)
            .with_context(|| "starting a role process".to_string())?;
    }
    eprintln!(
        "ferry: roles as processes (API server, {} controllers, {} agents) under {}",
        roles::CONTROLLERS.len(),
        agent_kubeconfigs.len(),
        roles::dir(&data).display()
    );
    // kube-controller-manager's jobs stay here, started again whenever they end (the API
    // server they talk to is killed and restarted by faults).
    let (tx, rx) = tokio::sync::watch::channel(false);
    let embedded = tokio::spawn(async move {
        while !*rx.borrow() {
            match crate::kube_client(Some(&embedded_kubeconfig)).await {
                Ok(c) => {
                    if let Err(e) = ferry_embedded::run(c, rx.clone()).await {
                        tracing::warn!(error = %e, "embedded controllers ended; restarting");
                    }
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "embedded controllers"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
    term.wait().await;
    eprintln!("ferry: shutting down");
    let _ = tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), embedded).await;
    tokio::task::spawn_blocking(move || running.stop()).await?;
    Ok(())
}
