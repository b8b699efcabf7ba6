//! The CNI environment (spec 1.0.0, "Parameters"): `CNI_COMMAND`, `CNI_CONTAINERID`,
//! `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`.

use std::path::PathBuf;

use super::error::{CniError, ErrorCode};

/// The operation the runtime asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
    Version,
}

impl CniCommand {
    /// Parses `CNI_COMMAND`. Commands of later spec versions (`GC`, `STATUS`) are refused.
    pub fn parse(s: &str) -> Result<CniCommand, CniError> {
        match s {
            "ADD" => Ok(CniCommand::Add),
            "DEL" => Ok(CniCommand::Del),
            "CHECK" => Ok(CniCommand::Check),
            "VERSION" => Ok(CniCommand::Version),
            other => Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("CNI_COMMAND={other:?} is not supported"),
                "expected one of ADD, DEL, CHECK, VERSION (CNI spec 1.0.0)",
            )),
        }
    }
}

/// The parsed `CNI_ARGS` (`K1=V1;K2=V2`). Kubernetes runtimes pass the pod's identity here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub k8s_pod_namespace: Option<String>,
    pub k8s_pod_name: Option<String>,
    pub k8s_pod_infra_container_id: Option<String>,
    pub k8s_pod_uid: Option<String>,
    /// Every pair in order, including the ones above and unknown keys (`IgnoreUnknown`).
    pub pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// Parses `K1=V1;K2=V2`; an empty string is no arguments. A pair without `=` is an
    /// error naming the pair.
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut args = CniArgs::default();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
                    "CNI_ARGS must be KEY=VALUE pairs separated by ';'",
                ));
            };
            match k {
                "K8S_POD_NAMESPACE" => args.k8s_pod_namespace = Some(v.to_string()),
                "K8S_POD_NAME" => args.k8s_pod_name = Some(v.to_string()),
                "K8S_POD_INFRA_CONTAINER_ID" => {
                    args.k8s_pod_infra_container_id = Some(v.to_string())
                }
                "K8S_POD_UID" => args.k8s_pod_uid = Some(v.to_string()),
                _ => {}
            }
            args.pairs.push((k.to_string(), v.to_string()));
        }
        Ok(args)
    }
}

/// The environment of one ADD, DEL or CHECK invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: CniCommand,
    pub container_id: String,
    /// `CNI_NETNS`: a path such as `/var/run/netns/NAME`. DEL may come without it (the
    /// sandbox is already gone); ADD and CHECK require it.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: CniArgs,
    /// `CNI_PATH`: where the runtime looks for plugins (split on `:`).
    pub path: Vec<PathBuf>,
}

/// What `CNI_COMMAND=VERSION` needs: nothing but the command. Anything else carries a
/// full [`CniEnv`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Version,
    Op(Box<CniEnv>),
}

/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Parses the CNI environment from `(name, value)` pairs (e.g. `std::env::vars()`).
pub fn parse_env<I, K, V>(vars: I) -> Result<Invocation, CniError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut command = None;
    let mut container_id = None;
    let mut netns = None;
    let mut ifname = None;
    let mut args = None;
    let mut path = None;
    for (k, v) in vars {
        let v = v.as_ref().to_string();
        match k.as_ref() {
            "CNI_COMMAND" => command = Some(v),
            "CNI_CONTAINERID" => container_id = Some(v),
            "CNI_NETNS" => netns = Some(v),
            "CNI_IFNAME" => ifname = Some(v),
            "CNI_ARGS" => args = Some(v),
            "CNI_PATH" => path = Some(v),
            _ => {}
        }
    }
    let missing = |name: &str| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("{name} is not set"),
            format!("the container runtime must set {name} (CNI spec 1.0.0, Parameters)"),
        )
    };
    let command = CniCommand::parse(command.as_deref().ok_or_else(|| missing("CNI_COMMAND"))?)?;
    if command == CniCommand::Version {
        return Ok(Invocation::Version);
    }
    let container_id = container_id
        .filter(|c| !c.is_empty())
        .ok_or_else(|| missing("CNI_CONTAINERID"))?;
    let ifname = ifname
        .filter(|i| !i.is_empty())
        .ok_or_else(|| missing("CNI_IFNAME"))?;
    validate_ifname(&ifname)?;
    let netns = netns.filter(|n| !n.is_empty()).map(PathBuf::from);
    if netns.is_none() && command != CniCommand::Del {
        return Err(missing("CNI_NETNS"));
    }
    let path = path
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    let args = CniArgs::parse(args.as_deref().unwrap_or(""))?;
    Ok(Invocation::Op(Box::new(CniEnv {
        command,
        container_id,
        netns,
        ifname,
        args,
        path,
    })))
}

/// A Linux interface name: 1-15 bytes, no `/`, whitespace or `:`, not `.` or `..`.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = name.is_empty()
        || name.len() > MAX_IFNAME_LEN
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("CNI_IFNAME={name:?} is not a valid interface name"),
            "an interface name is 1-15 characters without '/', ':' or whitespace",
        ));
    }
    Ok(())
}
