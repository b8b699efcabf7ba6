//! Installing Ferry's CNI plugin on a node, as the agent DaemonSet's init container does
//! (`ferry cni-install`): the binary into the runtime's CNI bin dir, a conflist into its
//! config dir, and a kubeconfig the plugin reads pods with, holding the agent's own
//! credentials (in a cluster: the ServiceAccount token projected into the agent's Pod).
//! [`uninstall`] removes exactly those three files (the agent's preStop hook), and
//! [`refresh_kubeconfig`] rewrites the kubeconfig when the projected token rotates.
//!
//! What gets written is decided by pure builders ([`conflist`], [`kubeconfig`]); the I/O is
//! writing whole files atomically (a temporary file renamed over the old one), so a runtime
//! reading the config dir, or executing the plugin, never sees half a file.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The plugin's file name in the bin dir: the network config's `type`.
pub const PLUGIN_NAME: &str = "ferry";
/// The conflist's file name: sorted first among typical configs, as runtimes use the first.
pub const CONFLIST_NAME: &str = "10-ferry.conflist";
/// The kubeconfig's file name in the config dir (not `.conf`/`.conflist`/`.json`, so
/// runtimes do not take it for a network config).
pub const KUBECONFIG_NAME: &str = "ferry-kubeconfig";

/// Where an in-cluster Pod finds its ServiceAccount credentials.
pub const IN_CLUSTER_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The network settings of the conflist's one plugin entry.
#[derive(Debug, Clone, PartialEq)]
pub struct NetSettings {
    /// The node's OVS database socket (`ovsDbSock`).
    pub ovs_db_sock: PathBuf,
    /// The namespace `ovs-vswitchd` runs in, when not the host's (`ovsNetns`).
    pub ovs_netns: Option<PathBuf>,
    /// OVS interface type of pod ports ("" = system).
    pub ovs_port_type: String,
    /// The cluster DNS address and search domains for the pods' resolv.conf.
    pub dns: Option<(String, Vec<String>)>,
    /// The node's agent mode; written (`mode`) only when not `full`, so a full node's
    /// conflist is what it always was.
    pub mode: crate::dpu::AgentMode,
}

/// The conflist a runtime loads from its config dir; `kubeconfig` is where the plugin
/// reads its credentials on the host.
pub fn conflist(net: &NetSettings, kubeconfig: &Path) -> Value {
    let mut plugin = json!({
        "type": PLUGIN_NAME,
        "ovsDbSock": net.ovs_db_sock,
        "bridge": crate::cni::DEFAULT_BRIDGE,
        "kubeconfig": kubeconfig,
    });
    if let Some(ns) = &net.ovs_netns {
        plugin["ovsNetns"] = json!(ns);
    }
    if !net.ovs_port_type.is_empty() {
        plugin["ovsPortType"] = json!(net.ovs_port_type);
    }
    if net.mode != crate::dpu::AgentMode::Full {
        plugin["mode"] = json!(net.mode);
    }
    if let Some((server, search)) = &net.dns {
        plugin["dns"] = json!({"nameservers": [server], "search": search});
    }
    json!({"cniVersion": crate::cni::CNI_VERSION, "name": "ferry", "plugins": [plugin]})
}

/// A kubeconfig for one API server, authenticating with a bearer token.
pub fn kubeconfig(server: &str, ca_pem: Option<&[u8]>, token: &str) -> Value {
    use base64_lite::encode;
    let mut cluster = json!({"server": server});
    // Without a CA the system's roots verify the server.
    if let Some(ca) = ca_pem {
        cluster["certificate-authority-data"] = json!(encode(ca));
    }
    json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "ferry", "cluster": cluster}],
        "users": [{"name": "ferry-cni", "user": {"token": token}}],
        "contexts": [{"name": "ferry", "context": {"cluster": "ferry", "user": "ferry-cni"}}],
        "current-context": "ferry",
    })
}

/// Where the credentials come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    /// The Pod's ServiceAccount (`KUBERNETES_SERVICE_HOST`/`_PORT`, the projected token
    /// and CA under `dir`); the kubeconfig is rebuilt from them.
    InCluster { server: String, dir: PathBuf },
    /// An existing kubeconfig, copied as it is (tests, nodes set up by hand).
    Kubeconfig(PathBuf),
}

impl Credentials {
    /// In-cluster credentials from the environment a Pod gets; `dir` holds the
    /// ServiceAccount's `token` and `ca.crt` (normally [`IN_CLUSTER_DIR`]).
    pub fn in_cluster(dir: PathBuf) -> Result<Credentials, InstallError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| InstallError::NoCluster)?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = match host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{host}]"),
            Err(_) => host,
        };
        Ok(Credentials::InCluster {
            server: format!("https://{host}:{port}"),
            dir,
        })
    }
}

/// What to install, and where.
#[derive(Debug, Clone)]
pub struct Install {
    /// The `ferry` binary to copy (usually the running one).
    pub binary: PathBuf,
    /// The runtime's CNI bin dir (`/opt/cni/bin` on the host).
    pub bin_dir: PathBuf,
    /// The runtime's CNI config dir (`/etc/cni/net.d` on the host).
    pub conf_dir: PathBuf,
    /// The config dir as the host (the runtime, the plugin) sees it, when this process
    /// sees it elsewhere (a container mounting it at `/host/etc/cni/net.d`).
    pub host_conf_dir: Option<PathBuf>,
    pub net: NetSettings,
    pub credentials: Credentials,
}

/// Errors of installing and removing.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("not in a cluster (no KUBERNETES_SERVICE_HOST): pass --kubeconfig")]
    NoCluster,
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The paths [`install`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Installed {
    pub plugin: PathBuf,
    pub conflist: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Install {
    /// The files this installation owns.
    pub fn paths(&self) -> Installed {
        Installed {
            plugin: self.bin_dir.join(PLUGIN_NAME),
            conflist: self.conf_dir.join(CONFLIST_NAME),
            kubeconfig: self.conf_dir.join(KUBECONFIG_NAME),
        }
    }

    fn host_kubeconfig(&self) -> PathBuf {
        self.host_conf_dir
            .as_deref()
            .unwrap_or(&self.conf_dir)
            .join(KUBECONFIG_NAME)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, InstallError> {
    std::fs::read(path).map_err(|source| InstallError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| InstallError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("ferry"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The kubeconfig bytes for `credentials`.
fn kubeconfig_bytes(credentials: &Credentials) -> Result<Vec<u8>, InstallError> {
    match credentials {
        Credentials::Kubeconfig(path) => read(path),
        Credentials::InCluster { server, dir } => {
            let token = String::from_utf8_lossy(&read(&dir.join("token"))?)
                .trim()
                .to_owned();
            let ca = read(&dir.join("ca.crt")).ok();
            let kc = kubeconfig(server, ca.as_deref(), &token);
            Ok(serde_json::to_vec_pretty(&kc).unwrap_or_default())
        }
    }
}

/// Copies the binary, writes the kubeconfig, then the conflist (last: a runtime that sees
/// the config finds the plugin and its credentials in place).
pub fn install(i: &Install) -> Result<Installed, InstallError> {
    let paths = i.paths();
    write_atomic(&paths.plugin, &read(&i.binary)?, 0o755)?;
    write_atomic(&paths.kubeconfig, &kubeconfig_bytes(&i.credentials)?, 0o600)?;
    let conf = conflist(&i.net, &i.host_kubeconfig());
    write_atomic(
        &paths.conflist,
        &serde_json::to_vec_pretty(&conf).unwrap_or_default(),
        0o644,
    )?;
    Ok(paths)
}

/// Rewrites the kubeconfig if its credentials changed (a rotated projected token);
/// returns whether it did.
pub fn refresh_kubeconfig(i: &Install) -> Result<bool, InstallError> {
    let path = i.paths().kubeconfig;
    let want = kubeconfig_bytes(&i.credentials)?;
    if std::fs::read(&path).ok().as_deref() == Some(want.as_slice()) {
        return Ok(false);
    }
    write_atomic(&path, &want, 0o600)?;
    Ok(true)
}

/// Removes the conflist first (the runtime stops sending new pods to Ferry), then the
/// kubeconfig and the binary. Files already gone are fine; returns those removed.
pub fn uninstall(i: &Install) -> Result<Vec<PathBuf>, InstallError> {
    let paths = i.paths();
    let mut removed = Vec::new();
    for p in [paths.conflist, paths.kubeconfig, paths.plugin] {
        match std::fs::remove_file(&p) {
            Ok(()) => removed.push(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(InstallError::Remove { path: p, source }),
        }
    }
    Ok(removed)
}

/// Standard base64 (RFC 4648, with padding), for `certificate-authority-data`; a few
/// lines rather than a dependency.
mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(input: &[u8]) -> String {
        let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetSettings {
        NetSettings {
            ovs_db_sock: "/var/run/openvswitch/db.sock".into(),
            ovs_netns: None,
            ovs_port_type: String::new(),
            dns: None,
            mode: crate::dpu::AgentMode::Full,
        }
    }

    #[test]
    fn conflist_cases() {
        let kc = Path::new("/etc/cni/net.d/ferry-kubeconfig");
        let cases = [
            (
                "defaults",
                net(),
                json!({"type": "ferry", "ovsDbSock": "/var/run/openvswitch/db.sock",
                       "bridge": "br-int", "kubeconfig": "/etc/cni/net.d/ferry-kubeconfig"}),
            ),
            (
                "ovs in its own namespace, afxdp ports, cluster DNS",
                NetSettings {
                    ovs_netns: Some("/var/run/netns/ovs".into()),
                    ovs_port_type: "afxdp".into(),
                    dns: Some(("10.96.0.10".into(), vec!["svc.cluster.local".into()])),
                    ..net()
                },
                json!({"type": "ferry", "ovsDbSock": "/var/run/openvswitch/db.sock",
                       "bridge": "br-int", "kubeconfig": "/etc/cni/net.d/ferry-kubeconfig",
                       "ovsNetns": "/var/run/netns/ovs", "ovsPortType": "afxdp",
                       "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}}),
            ),
            (
                "the host of a DPU",
                NetSettings {
                    mode: crate::dpu::AgentMode::DpuHost,
                    ..net()
                },
                json!({"type": "ferry", "ovsDbSock": "/var/run/openvswitch/db.sock",
                       "bridge": "br-int", "kubeconfig": "/etc/cni/net.d/ferry-kubeconfig",
                       "mode": "dpu-host"}),
            ),
        ];
        for (name, settings, plugin) in cases {
            assert_eq!(
                conflist(&settings, kc),
                json!({"cniVersion": "1.0.0", "name": "ferry", "plugins": [plugin]}),
                "{name}"
            );
        }
    }

    /// What the runtime hands the plugin (the conflist's name and version merged into the
    /// plugin entry) is a configuration `ferry cni` accepts.
    #[test]
    fn the_runtime_view_of_the_conflist_parses() {
        let conf = conflist(&net(), Path::new("/k"));
        let mut plugin = conf["plugins"][0].clone();
        plugin["name"] = conf["name"].clone();
        plugin["cniVersion"] = conf["cniVersion"].clone();
        let parsed = crate::cni::parse_conf(plugin.to_string().as_bytes()).expect("parses");
        assert_eq!(parsed.kubeconfig, Some(PathBuf::from("/k")));
        let dpu_host = NetSettings {
            mode: crate::dpu::AgentMode::DpuHost,
            ..net()
        };
        let mut plugin = conflist(&dpu_host, Path::new("/k"))["plugins"][0].clone();
        plugin["name"] = json!("ferry");
        plugin["cniVersion"] = json!(crate::cni::CNI_VERSION);
        let parsed = crate::cni::parse_conf(plugin.to_string().as_bytes()).expect("parses");
        assert_eq!(parsed.mode, crate::dpu::AgentMode::DpuHost);
        assert_eq!(parsed.ovs_bridge(), "");
        assert_eq!(parsed.plugin_type, PLUGIN_NAME);
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_lite::encode(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn kubeconfig_holds_server_ca_and_token() {
        assert_eq!(
            kubeconfig("https://10.96.0.1:443", Some(b"foo"), "t0k"),
            json!({"apiVersion": "v1", "kind": "Config",
                "clusters": [{"name": "ferry", "cluster": {"server": "https://10.96.0.1:443",
                    "certificate-authority-data": "Zm9v"}}],
                "users": [{"name": "ferry-cni", "user": {"token": "t0k"}}],
                "contexts": [{"name": "ferry", "context": {"cluster": "ferry", "user": "ferry-cni"}}],
                "current-context": "ferry"})
        );
    }

    #[test]
    fn install_refresh_uninstall_in_a_temp_dir() {
        let d = tempfile::tempdir().expect("tempdir");
        let sa = d.path().join("sa");
        std::fs::create_dir_all(&sa).expect("mkdir");
        std::fs::write(sa.join("token"), "one\n").expect("token");
        std::fs::write(sa.join("ca.crt"), "CA").expect("ca");
        std::fs::write(d.path().join("bin"), "#!/bin/sh\n").expect("binary");
        let i = Install {
            binary: d.path().join("bin"),
            bin_dir: d.path().join("host/opt/cni/bin"),
            conf_dir: d.path().join("host/etc/cni/net.d"),
            host_conf_dir: Some("/etc/cni/net.d".into()),
            net: net(),
            credentials: Credentials::InCluster {
                server: "https://10.96.0.1:443".into(),
                dir: sa.clone(),
            },
        };
        let paths = install(&i).expect("install");
        assert_eq!(
            std::fs::read_to_string(&paths.plugin).expect("plugin"),
            "#!/bin/sh\n"
        );
        let conf: Value =
            serde_json::from_slice(&std::fs::read(&paths.conflist).expect("conflist"))
                .expect("json");
        assert_eq!(
            conf,
            conflist(&net(), Path::new("/etc/cni/net.d/ferry-kubeconfig"))
        );
        let token = |p: &Path| -> Value {
            let kc: Value = serde_json::from_slice(&std::fs::read(p).expect("kc")).expect("json");
            kc["users"][0]["user"]["token"].clone()
        };
        assert_eq!(token(&paths.kubeconfig), "one");
        assert!(!refresh_kubeconfig(&i).expect("refresh"), "nothing changed");
        std::fs::write(sa.join("token"), "two\n").expect("token");
        assert!(refresh_kubeconfig(&i).expect("refresh"));
        assert_eq!(token(&paths.kubeconfig), "two");
        let removed = uninstall(&i).expect("uninstall");
        assert_eq!(
            removed,
            vec![paths.conflist, paths.kubeconfig, paths.plugin]
        );
        assert_eq!(uninstall(&i).expect("again"), Vec::<PathBuf>::new());
        // Nothing else was left in the dirs (no temporary files).
        for dir in [&i.bin_dir, &i.conf_dir] {
            assert_eq!(std::fs::read_dir(dir).expect("dir").count(), 0, "{dir:?}");
        }
    }
}
