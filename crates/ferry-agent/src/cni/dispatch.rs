//! One plugin invocation: environment + stdin in, stdout + exit status out. The
//! operations themselves are a [`CniPlugin`]; this module owns only the protocol.

use super::config::{NetConf, parse_conf, peek_version};
use super::env::{CniCommand, CniEnv, Invocation, parse_env};
use super::error::{CniError, ErrorCode};
use super::result::CniResult;
use super::version::{check_version, supports_check, version_info};

/// The operations behind ADD, DEL and CHECK.
pub trait CniPlugin {
    /// Plumbs the container and returns what was configured.
    fn add(&mut self, env: &CniEnv, conf: &NetConf) -> Result<CniResult, CniError>;
    /// Removes what ADD created; must succeed when it is already gone.
    fn del(&mut self, env: &CniEnv, conf: &NetConf) -> Result<(), CniError>;
    /// Verifies the container's network is as ADD left it.
    fn check(&mut self, env: &CniEnv, conf: &NetConf) -> Result<(), CniError>;
}

/// What the plugin process prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub stdout: String,
    pub exit_code: i32,
}

impl Reply {
    fn ok(stdout: String) -> Reply {
        Reply {
            stdout,
            exit_code: 0,
        }
    }

    fn error(mut err: CniError, version: Option<&str>) -> Reply {
        if let Some(v) = version.filter(|v| check_version(v).is_ok()) {
            err.cni_version = v.to_string();
        }
        Reply {
            stdout: err.to_json(),
            exit_code: 1,
        }
    }
}

/// Runs one invocation.
pub fn dispatch<I, K, V, P>(vars: I, stdin: &[u8], plugin: &mut P) -> Reply
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
    P: CniPlugin,
{
    let version = peek_version(stdin);
    let env = match parse_env(vars) {
        Ok(Invocation::Version) => {
            let info = version_info();
            return Reply::ok(serde_json::to_string(&info).unwrap_or_default());
        }
        Ok(Invocation::Op(env)) => *env,
        Err(e) => return Reply::error(e, version.as_deref()),
    };
    let conf = match parse_conf(stdin) {
        Ok(c) => c,
        Err(e) => return Reply::error(e, version.as_deref()),
    };
    let v = conf.cni_version.clone();
    let outcome = match env.command {
        CniCommand::Add => plugin.add(&env, &conf).map(|r| r.for_version(&v).to_json()),
        CniCommand::Del => plugin.del(&env, &conf).map(|()| String::new()),
        CniCommand::Check if !supports_check(&v) => Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("CHECK is not defined for cniVersion {v}"),
            "CHECK exists since cniVersion 0.4.0",
        )),
        CniCommand::Check => plugin.check(&env, &conf).map(|()| String::new()),
        CniCommand::Version => Ok(String::new()),
    };
    match outcome {
        Ok(out) => Reply::ok(out),
        Err(e) => Reply::error(e, Some(&v)),
    }
}
