//! Runs a `kubectl exec` command in a lab pod: in the pod's network namespace (`ip netns
//! exec`, which also gives it the namespace's `/etc/netns` files), in a UTS namespace of its
//! own whose hostname is the pod's name (as in a Kubernetes container), with the
//! container's env and working directory; with pipes, or with a pseudo-terminal that is its
//! controlling terminal (`-t`, `setsid --ctty`), resized with `stty`. Protocol-free: bytes
//! and resizes in, output chunks and the exit out ([`Exec`]); the protocols are in
//! [`super::remotecommand`].

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

/// What to run and how its streams are wired.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecSpec {
    pub netns: String,
    /// The pod's name, the hostname the command sees.
    pub hostname: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// From the client to the command.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize { width: u16, height: u16 },
}

/// From the command to the client; `Exit` comes last, after the output.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(i32),
}

/// A running command; dropping it kills what is left of it.
#[derive(Debug)]
pub struct Exec {
    pub input: mpsc::Sender<Input>,
    pub output: mpsc::Receiver<Output>,
    pid: i32,
    exited: Arc<AtomicBool>,
}

impl Drop for Exec {
    fn drop(&mut self) {
        if !self.exited.load(Ordering::SeqCst) {
            let group = nix::unistd::Pid::from_raw(-self.pid);
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The argv that runs `spec.argv` in the pod's namespaces.
pub fn command_line(spec: &ExecSpec) -> Vec<String> {
    let mut argv: Vec<String> = ["ip", "netns", "exec", &spec.netns]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if spec.tty {
        argv.extend(["setsid".into(), "--ctty".into()]);
    }
    argv.extend(
        [
            "unshare",
            "--uts",
            "sh",
            "-c",
            "hostname \"$0\" 2>/dev/null; exec \"$@\"",
            &spec.hostname,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    argv.extend(spec.argv.iter().cloned());
    argv
}

/// How long output still in the pipes may take to arrive after the command exits (a
/// background child holding them open must not hold the session forever).
const DRAIN: Duration = Duration::from_secs(2);

/// Starts the command.
pub fn start(spec: &ExecSpec) -> std::io::Result<Exec> {
    let argv = command_line(spec);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.dir);
    if spec.tty {
        cmd.env("TERM", "xterm");
    }
    let (in_tx, mut in_rx) = mpsc::channel::<Input>(64);
    let (out_tx, out_rx) = mpsc::channel::<Output>(64);
    let mut readers: Vec<(Box<dyn Read + Send>, bool)> = Vec::new();
    let mut writer: Option<Box<dyn Write + Send>> = None;
    let mut tty_path: Option<PathBuf> = None;
    let mut child = if spec.tty {
        let pty = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
        tty_path = nix::unistd::ttyname(&pty.slave).ok();
        let slave = std::fs::File::from(pty.slave);
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn()?;
        // The command's copies are its own now: the master reads EOF (EIO) once it exits.
        drop(cmd);
        let master = std::fs::File::from(pty.master);
        writer = Some(Box::new(master.try_clone()?));
        readers.push((Box::new(master), true));
        child
    } else {
        cmd.stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if spec.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if spec.stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .process_group(0);
        let mut child = cmd.spawn()?;
        if let Some(w) = child.stdin.take() {
            writer = Some(Box::new(w));
        }
        if let Some(r) = child.stdout.take() {
            readers.push((Box::new(r), true));
        }
        if let Some(r) = child.stderr.take() {
            readers.push((Box::new(r), false));
        }
        child
    };
    let pid = child.id() as i32;
    let exited = Arc::new(AtomicBool::new(false));

    // Output: one thread per pipe; each says when it is done.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let n_readers = readers.len();
    for (mut r, is_stdout) in readers {
        let (tx, done) = (out_tx.clone(), done_tx.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = buf[..n].to_vec();
                        let o = if is_stdout {
                            Output::Stdout(chunk)
                        } else {
                            Output::Stderr(chunk)
                        };
                        if tx.blocking_send(o).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = done.send(());
        });
    }
    drop(done_tx);
    // The exit, after the output (or after DRAIN if something holds the pipes open).
    let ex = exited.clone();
    std::thread::spawn(move || {
        let code = match child.wait() {
            Ok(s) => s.code().unwrap_or_else(|| {
                128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(9)
            }),
            Err(_) => 1,
        };
        ex.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + DRAIN;
        for _ in 0..n_readers {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if done_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        let _ = out_tx.blocking_send(Output::Exit(code));
    });
    // Input: a thread writes stdin; resizes go to the terminal.
    let (stdin_tx, stdin_rx) = std::sync::mpsc::channel::<Option<Vec<u8>>>();
    if let Some(mut w) = writer {
        std::thread::spawn(move || {
            while let Ok(Some(data)) = stdin_rx.recv() {
                if w.write_all(&data).is_err() {
                    break;
                }
                let _ = w.flush();
            }
        });
    }
    let is_tty = spec.tty;
    tokio::spawn(async move {
        while let Some(i) = in_rx.recv().await {
            match i {
                Input::Stdin(d) => {
                    let _ = stdin_tx.send(Some(d));
                }
                // A terminal has no half-close: Ctrl-D is data.
                Input::CloseStdin if !is_tty => {
                    let _ = stdin_tx.send(None);
                }
                Input::CloseStdin => {}
                Input::Resize { width, height } => {
                    if let Some(p) = &tty_path {
                        let _ = tokio::process::Command::new("stty")
                            .arg("-F")
                            .arg(p)
                            .args(["cols", &width.to_string(), "rows", &height.to_string()])
                            .status()
                            .await;
                    }
                }
            }
        }
    });
    Ok(Exec {
        input: in_tx,
        output: out_rx,
        pid,
        exited,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_runs_in_the_pods_namespaces_with_its_hostname() {
        let spec = ExecSpec {
            netns: "ferry-t1-web".into(),
            hostname: "web-1".into(),
            argv: vec!["sh".into(), "-c".into(), "exit 3".into()],
            env: vec![],
            dir: "/tmp".into(),
            stdin: false,
            stdout: true,
            stderr: true,
            tty: false,
        };
        assert_eq!(
            command_line(&spec),
            [
                "ip",
                "netns",
                "exec",
                "ferry-t1-web",
                "unshare",
                "--uts",
                "sh",
                "-c",
                "hostname \"$0\" 2>/dev/null; exec \"$@\"",
                "web-1",
                "sh",
                "-c",
                "exit 3"
            ]
        );
        let tty = ExecSpec {
            tty: true,
            argv: vec!["bash".into()],
            ..spec
        };
        assert_eq!(&command_line(&tty)[4..6], ["setsid", "--ctty"]);
    }
}
