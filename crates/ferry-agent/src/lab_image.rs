//! Images in the lab runtime: a container whose `image` names an image of the lab's OCI
//! layout (the directory `scripts/image.sh` writes, `target/image/oci`, given to the agent
//! with `--lab-images`) runs chrooted into that image's root file system, unpacked once
//! per manifest digest with `umoci unpack` under the agent's state dir, in a mount
//! namespace of its own holding the pod's volumes as bind mounts. Containers of other
//! images run on the host's file system as before.
//!
//! An image `[REGISTRY/][PATH/]NAME[:TAG]` is in the layout when the layout has a manifest
//! whose `org.opencontainers.image.ref.name` is TAG (default `latest`) and NAME is the
//! image's `org.opencontainers.image.title` label (`ferry` for Ferry's image), so
//! `localhost/ferry:dev`, `ferry:dev` and `REGISTRY/ferry:dev` all run the layout's `dev`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// A bind mount of a container: a host path at a path inside the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host: PathBuf,
    /// Absolute, inside the container.
    pub container: PathBuf,
    pub read_only: bool,
}

/// The lab's images and what its containers are told of the API server.
#[derive(Debug, Clone)]
pub struct LabImages {
    /// The OCI layout.
    pub layout: PathBuf,
    /// Where root file systems are unpacked (one directory per manifest digest).
    pub cache: PathBuf,
    /// `KUBERNETES_SERVICE_HOST` / `_PORT` of containers: the API server as this agent
    /// reaches it (a lab has no `kubernetes` Service address to route).
    pub api_host: String,
    pub api_port: u16,
    /// The API server's CA (PEM), the `ca.crt` of the ServiceAccount token directory.
    pub api_ca_pem: Vec<u8>,
}

impl LabImages {
    /// The images of `layout`, unpacked under `cache`, for containers of an agent whose
    /// API client is `config` (its server address and CA are what containers get).
    pub fn for_client(layout: PathBuf, cache: PathBuf, config: &kube::Config) -> LabImages {
        use base64::Engine;
        let url = &config.cluster_url;
        let pem: String = config
            .root_cert
            .iter()
            .flatten()
            .map(|der| {
                let b64 = base64::engine::general_purpose::STANDARD.encode(der);
                let lines: Vec<&str> = b64
                    .as_bytes()
                    .chunks(64)
                    .map(|c| std::str::from_utf8(c).unwrap_or_default())
                    .collect();
                format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    lines.join("\n")
                )
            })
            .collect();
        LabImages {
            layout,
            cache,
            api_host: url
                .host()
                .unwrap_or("127.0.0.1")
                .trim_matches(['[', ']'])
                .to_string(),
            api_port: url.port_u16().unwrap_or(443),
            api_ca_pem: pem.into_bytes(),
        }
    }
}

static IMAGES: OnceLock<LabImages> = OnceLock::new();
/// Unpacks one at a time (two pods of one image must not unpack it twice).
static UNPACK: Mutex<()> = Mutex::new(());

/// Sets the agent's images (once per process: `ferry agent --lab --lab-images`).
pub fn configure(images: LabImages) {
    let _ = IMAGES.set(images);
}

/// The agent's images, if configured.
pub fn images() -> Option<&'static LabImages> {
    IMAGES.get()
}

/// Why an image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("reading the OCI layout {path}: {source}")]
    Layout {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("OCI layout {0}: malformed JSON")]
    Json(PathBuf),
    #[error("umoci unpack of {image}: {message}")]
    Unpack { image: String, message: String },
}

/// `(NAME, TAG)` of an image reference: the last path component and the tag (`latest`
/// when none; a digest reference has no tag and matches nothing).
pub fn name_and_tag(image: &str) -> Option<(&str, &str)> {
    if image.contains('@') {
        return None;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((n, t)) => Some((n, t)),
        None => Some((last, "latest")),
    }
}

/// The manifest digest of `image` in a layout's `index.json`, given the title of the
/// layout's image (its config's `org.opencontainers.image.title`).
pub fn find_manifest(index: &Value, title: &str, image: &str) -> Option<String> {
    let (name, tag) = name_and_tag(image)?;
    if name != title {
        return None;
    }
    index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .map(String::from)
}

fn read_json(path: &Path) -> Result<Value, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Layout {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|_| ImageError::Json(path.to_path_buf()))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    layout.join("blobs").join(alg).join(hex)
}

/// An unpacked image: its root file system and its configured environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub rootfs: PathBuf,
    pub env: Vec<(String, String)>,
}

impl LabImages {
    /// The manifest digest of `image` if the layout holds it.
    pub fn manifest(&self, image: &str) -> Option<String> {
        let index = read_json(&self.layout.join("index.json")).ok()?;
        // Every manifest of a layout image.sh writes has the same config title.
        let first = index["manifests"][0]["digest"].as_str()?.to_string();
        let manifest = read_json(&blob(&self.layout, &first)).ok()?;
        let config = read_json(&blob(&self.layout, manifest["config"]["digest"].as_str()?)).ok()?;
        let title = config["config"]["Labels"]["org.opencontainers.image.title"].as_str()?;
        find_manifest(&index, title, image)
    }

    /// The root file system of `image` (unpacked on first use), or `None` for an image
    /// the layout does not hold.
    pub fn unpack(&self, image: &str) -> Result<Option<Unpacked>, ImageError> {
        let Some(digest) = self.manifest(image) else {
            return Ok(None);
        };
        let (_, tag) = name_and_tag(image).unwrap_or_default();
        let bundle = self.cache.join(digest.replace(':', "-"));
        let _one = UNPACK.lock();
        if !bundle.join("config.json").exists() {
            let partial = bundle.with_extension("partial");
            let _ = std::fs::remove_dir_all(&partial);
            let _ = std::fs::create_dir_all(&self.cache);
            let out = Command::new("umoci")
                .arg("unpack")
                .arg("--image")
                .arg(format!("{}:{tag}", self.layout.display()))
                .arg(&partial)
                .output()
                .map_err(|e| ImageError::Unpack {
                    image: image.into(),
                    message: e.to_string(),
                })?;
            if !out.status.success() {
                return Err(ImageError::Unpack {
                    image: image.into(),
                    message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            std::fs::rename(&partial, &bundle).map_err(|e| ImageError::Unpack {
                image: image.into(),
                message: e.to_string(),
            })?;
            tracing::info!(%image, %digest, bundle = %bundle.display(), "unpacked");
        }
        let config = read_json(&bundle.join("config.json"))?;
        let env = config["process"]["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Some(Unpacked {
            rootfs: bundle.join("rootfs"),
            env,
        }))
    }
}

/// Where `program` is inside `rootfs` along `path` (a `PATH` value), as the path the
/// chrooted process executes; a program with a `/` is taken as it is.
pub fn resolve(rootfs: &Path, path: &str, program: &str) -> Option<String> {
    if program.contains('/') {
        return Some(program.to_string());
    }
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
        .find(|p| rootfs.join(p.trim_start_matches('/')).is_file())
}

/// The mounts every container of an image gets before its own: the host's `/proc`,
/// `/dev` and `/sys` (a lab container shares the host's PID namespace, as `hostPID`).
fn system_mounts() -> Vec<Mount> {
    ["/proc", "/dev", "/sys"]
        .into_iter()
        .map(|p| Mount {
            host: p.into(),
            container: p.into(),
            read_only: false,
        })
        .collect()
}

/// `path` (absolute, inside the image) as a host path under `rootfs`, its symbolic links
/// followed inside the image (`/var/run` -> `/run` must not lead to the host's `/run`).
pub fn in_root(rootfs: &Path, path: &Path) -> PathBuf {
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .rev()
        .collect();
    let mut inside = PathBuf::from("/");
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            inside.pop();
            continue;
        }
        let next = inside.join(&part);
        let host = rootfs.join(next.strip_prefix("/").unwrap_or(&next));
        match std::fs::read_link(&host) {
            Ok(target) if hops < 40 => {
                hops += 1;
                if target.is_absolute() {
                    inside = PathBuf::from("/");
                }
                let parts: Vec<_> = target
                    .components()
                    .filter_map(|c| match c {
                        std::path::Component::Normal(n) => Some(n.to_os_string()),
                        std::path::Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                pending.extend(parts.into_iter().rev());
            }
            _ => inside = next,
        }
    }
    rootfs.join(inside.strip_prefix("/").unwrap_or(&inside))
}

/// `s` quoted for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The absolute path of `tool` on the agent's own `PATH` (the container's environment
/// replaces it for the processes that run the container).
fn host_tool(tool: &str) -> std::io::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("{tool} not found"))
        })
}

/// The shell script that binds `binds` (host path, target under the root, read-only) and
/// executes `$@` chrooted into `$1`, in the mount namespace `unshare` made for it.
pub fn mount_script(binds: &[(PathBuf, PathBuf, bool)], mount: &Path, chroot: &Path) -> String {
    let mut lines = vec!["set -e".to_string()];
    for (src, dst, ro) in binds {
        let (src, dst) = (quote(&src.to_string_lossy()), quote(&dst.to_string_lossy()));
        let mount = quote(&mount.to_string_lossy());
        lines.push(format!("{mount} --rbind {src} {dst}"));
        if *ro {
            lines.push(format!("{mount} -o remount,bind,ro {dst}"));
        }
    }
    lines.push(format!(
        "r=\"$1\"; shift; exec {} \"$r\" \"$@\"",
        quote(&chroot.to_string_lossy())
    ));
    lines.join("\n")
}

/// A command running `argv` chrooted into `rootfs` with `mounts` bound in, in the network
/// namespace `netns` (a `/run/netns` name; empty: the agent's own, `hostNetwork`), with
/// exactly `env`: `[ip netns exec NETNS] unshare --mount --propagation private sh -c
/// SCRIPT` (each executes the next in the same process, so its PID is the container's).
pub fn command(
    rootfs: &Path,
    mounts: &[Mount],
    netns: &str,
    argv: &[String],
    env: &[(String, String)],
) -> std::io::Result<Command> {
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let program = argv.first().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a container without a command",
        )
    })?;
    let exe = resolve(rootfs, path, program).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{program} is not on the image's PATH {path}"),
        )
    })?;
    let mut binds = Vec::new();
    for m in system_mounts().iter().chain(mounts) {
        let target = in_root(rootfs, &m.container);
        if m.host.exists() && !m.host.is_dir() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if !target.exists() {
                std::fs::write(&target, b"")?;
            }
        } else {
            // A hostPath that does not exist yet is made (DirectoryOrCreate).
            std::fs::create_dir_all(&m.host)?;
            std::fs::create_dir_all(&target)?;
        }
        binds.push((m.host.clone(), target, m.read_only));
    }
    let script = mount_script(&binds, &host_tool("mount")?, &host_tool("chroot")?);
    let unshare = host_tool("unshare")?;
    let mut cmd = match netns.is_empty() {
        true => Command::new(&unshare),
        false => {
            let mut c = Command::new(host_tool("ip")?);
            c.args(["netns", "exec", netns]).arg(&unshare);
            c
        }
    };
    cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(script)
        .arg("lab-image")
        .arg(rootfs)
        .arg(exe)
        .args(&argv[1..])
        .current_dir("/")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)));
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn image_references_find_the_layouts_tag_by_name() {
        let index = json!({"manifests": [
            {"digest": "sha256:aa", "annotations": {"org.opencontainers.image.ref.name": "dev"}},
            {"digest": "sha256:bb", "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
        let cases = [
            ("localhost/ferry:dev", Some("sha256:aa")),
            ("ferry:dev", Some("sha256:aa")),
            ("registry.example:5000/yusur/ferry:dev", Some("sha256:aa")),
            ("ferry", Some("sha256:bb")),
            ("ferry:v9", None),
            ("busybox:dev", None),
            ("ferry@sha256:aa", None),
        ];
        for (image, want) in cases {
            assert_eq!(
                find_manifest(&index, "ferry", image).as_deref(),
                want,
                "{image}"
            );
        }
    }

    #[test]
    fn the_mount_script_binds_then_chroots() {
        let binds = vec![
            (PathBuf::from("/proc"), PathBuf::from("/r/proc"), false),
            (
                PathBuf::from("/opt/it's"),
                PathBuf::from("/r/host/opt"),
                true,
            ),
        ];
        let got = mount_script(&binds, Path::new("/bin/mount"), Path::new("/sbin/chroot"));
        let want = [
            "set -e",
            "'/bin/mount' --rbind '/proc' '/r/proc'",
            "'/bin/mount' --rbind '/opt/it'\\''s' '/r/host/opt'",
            "'/bin/mount' -o remount,bind,ro '/r/host/opt'",
            "r=\"$1\"; shift; exec '/sbin/chroot' \"$r\" \"$@\"",
        ]
        .join("\n");
        assert_eq!(got, want);
    }

    #[test]
    fn programs_resolve_inside_the_root_file_system() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("usr/local/bin")).expect("mkdir");
        std::fs::write(root.path().join("usr/local/bin/ferry"), b"").expect("write");
        let path = "/usr/local/sbin:/usr/local/bin:/usr/bin";
        assert_eq!(
            resolve(root.path(), path, "ferry").as_deref(),
            Some("/usr/local/bin/ferry")
        );
        assert_eq!(resolve(root.path(), path, "sh"), None);
        // Links resolve inside the root: /var/run -> /run, bin -> usr/bin.
        std::fs::create_dir_all(root.path().join("var")).expect("mkdir");
        std::os::unix::fs::symlink("/run", root.path().join("var/run")).expect("symlink");
        std::os::unix::fs::symlink("usr/bin", root.path().join("bin")).expect("symlink");
        let r = root.path();
        assert_eq!(in_root(r, Path::new("/var/run/netns")), r.join("run/netns"));
        assert_eq!(in_root(r, Path::new("/bin/x")), r.join("usr/bin/x"));
        assert_eq!(in_root(r, Path::new("/host/opt")), r.join("host/opt"));
        assert_eq!(
            resolve(root.path(), path, "/bin/sh").as_deref(),
            Some("/bin/sh")
        );
    }
}
