//! The traffic tools, run inside network namespaces: servers (`iperf3 -s`,
//! `sockperf server`, a private `nginx`) started as children and stopped by PID, clients
//! run to completion under `timeout`, and pure parsers of their output.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use super::services::{HTTP_PORT, IPERF_PORT, SOCKPERF_PORT};
use crate::error::{Error, Result};

/// The file nginx serves (a small body, like an API answer).
pub const SMALL_FILE: &str = "small";
/// Its size in bytes.
pub const SMALL_FILE_BYTES: usize = 128;
/// Parallel connections wrk keeps open.
pub const WRK_CONNECTIONS: u32 = 16;

// === running commands ===

/// `ip netns exec NS ARGV...`.
pub fn in_netns(ns: &str, argv: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(argv);
    c
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command to completion; stdout if it exits 0, else an error with its stderr.
/// Stdin is empty unless the caller set it (`Command::output`'s default).
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|source| Error::Spawn {
        program: describe(cmd),
        source,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if stderr.is_empty() {
            stderr = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        if stderr.len() > 2000 {
            stderr.truncate(2000);
        }
        Err(Error::Command {
            command: describe(cmd),
            status: out.status.to_string(),
            stderr,
        })
    }
}

/// Runs a client inside `ns`, killed after `limit` (coreutils `timeout`, SIGKILL 2 s later).
pub fn run_client(ns: &str, argv: &[&str], limit: Duration) -> Result<String> {
    let secs = limit.as_secs().max(1).to_string();
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=2", &secs, "ip", "netns", "exec", ns])
        .args(argv);
    run_ok(&mut cmd)
}

/// Runs `ip ARGS...`.
pub fn ip(args: &[&str]) -> Result<String> {
    run_ok(Command::new("ip").args(args))
}

// === servers ===

/// A server process we started; stopped by PID (SIGTERM, SIGKILL after 3 s) on drop.
#[derive(Debug)]
pub struct Server {
    name: String,
    child: Option<Child>,
}

impl Server {
    /// Starts `argv` inside `ns` in its own process group (a terminal's Ctrl-C reaches
    /// only us, and we stop it), output appended to `log`.
    pub fn spawn(name: &str, ns: &str, argv: &[&str], log: &Path) -> Result<Server> {
        let open = || {
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| Error::io("open log", log, e))
        };
        let mut cmd = in_netns(ns, argv);
        cmd.stdin(Stdio::null()).stdout(open()?).stderr(open()?);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            program: describe(&cmd),
            source,
        })?;
        Ok(Server {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    /// SIGTERM, wait up to 3 s, then SIGKILL; reaps it. Idempotent.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(
            server = self.name,
            pid = child.id(),
            "no exit after SIGTERM; SIGKILL"
        );
        child.kill().map_err(|e| Error::Command {
            command: format!("kill -9 {} ({})", child.id(), self.name),
            status: "failed".into(),
            stderr: e.to_string(),
        })?;
        let _ = child.wait();
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(server = self.name, error = %e, "stopping server");
        }
    }
}

/// The three servers of a backend namespace.
#[derive(Debug)]
pub struct Backend {
    pub servers: Vec<Server>,
}

/// nginx's configuration: one worker, everything (pid, logs, temp paths) under `dir`.
pub fn nginx_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;\n\
         daemon off;\n\
         master_process on;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 client_body_temp_path {d}/tmp/body;\n\
         \x20 proxy_temp_path {d}/tmp/proxy;\n\
         \x20 fastcgi_temp_path {d}/tmp/fastcgi;\n\
         \x20 uwsgi_temp_path {d}/tmp/uwsgi;\n\
         \x20 scgi_temp_path {d}/tmp/scgi;\n\
         \x20 keepalive_requests 10000000;\n\
         \x20 server {{ listen {HTTP_PORT} backlog=4096; root {d}/www; }}\n\
         }}\n"
    )
}

impl Backend {
    /// Starts iperf3, sockperf and nginx inside `ns`; files and logs go under `dir`.
    pub fn start(ns: &str, dir: &Path) -> Result<Backend> {
        let www = dir.join("www");
        for d in [www.clone(), dir.join("tmp")] {
            std::fs::create_dir_all(&d).map_err(|e| Error::io("create directory", &d, e))?;
        }
        let body: String = (0..SMALL_FILE_BYTES - 1)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .chain(std::iter::once('\n'))
            .collect();
        let file = www.join(SMALL_FILE);
        std::fs::write(&file, body).map_err(|e| Error::io("write", &file, e))?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir)).map_err(|e| Error::io("write", &conf, e))?;
        let s = |p: &PathBuf| p.display().to_string();
        let log = dir.join("servers.log");
        let iperf_port = IPERF_PORT.to_string();
        let sockperf_port = SOCKPERF_PORT.to_string();
        let err_log = s(&dir.join("error.log"));
        let prefix = s(&dir.to_path_buf());
        let conf = s(&conf);
        let servers = vec![
            Server::spawn("iperf3", ns, &["iperf3", "-s", "-p", &iperf_port], &log)?,
            Server::spawn(
                "sockperf",
                ns,
                &[
                    "sockperf",
                    "server",
                    "--tcp",
                    "-i",
                    "0.0.0.0",
                    "-p",
                    &sockperf_port,
                ],
                &log,
            )?,
            Server::spawn(
                "nginx",
                ns,
                &["nginx", "-e", &err_log, "-p", &prefix, "-c", &conf],
                &log,
            )?,
        ];
        Ok(Backend { servers })
    }

    /// Stops every server; the first error wins but all are tried.
    pub fn stop(&mut self) -> Result<()> {
        let mut first = Ok(());
        for s in &mut self.servers {
            if let Err(e) = s.stop()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}

/// Waits until `GET http://target/small` answers 200 from inside `ns`.
pub fn wait_http(path: &'static str, ns: &str, target: Ipv4Addr, limit: Duration) -> Result<()> {
    let url = format!("http://{target}:{HTTP_PORT}/{SMALL_FILE}");
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < limit {
        match run_client(
            ns,
            &[
                "curl",
                "-s",
                "-m",
                "1",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &url,
            ],
            Duration::from_secs(3),
        ) {
            Ok(code) if code.trim() == "200" => return Ok(()),
            Ok(code) => last = format!("HTTP {code}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(Error::Unreachable {
        path,
        target: url,
        waited_s: limit.as_secs(),
        detail: last,
    })
}

// === clients ===

/// One iperf3 stream for `secs` seconds; Gbit/s received.
pub fn iperf3(ns: &str, target: Ipv4Addr, secs: u64) -> Result<f64> {
    let t = secs.to_string();
    let ip = target.to_string();
    let port = IPERF_PORT.to_string();
    let mut argv = vec!["iperf3", "-c", &ip, "-p", &port, "-t", &t, "-J"];
    if secs >= 3 {
        argv.extend(["-O", "1"]);
    }
    let out = run_client(ns, &argv, Duration::from_secs(secs + 15))?;
    parse_iperf3(&out)
}

/// sockperf TCP ping-pong for `secs` seconds: (p50, p99) in microseconds.
pub fn sockperf(ns: &str, target: Ipv4Addr, secs: u64) -> Result<(f64, f64)> {
    let t = secs.to_string();
    let ip = target.to_string();
    let port = SOCKPERF_PORT.to_string();
    let out = run_client(
        ns,
        &[
            "sockperf",
            "ping-pong",
            "--tcp",
            "-i",
            &ip,
            "-p",
            &port,
            "-t",
            &t,
        ],
        Duration::from_secs(secs + 15),
    )?;
    parse_sockperf(&out)
}

/// What a wrk run reported.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkResult {
    pub requests_per_s: f64,
    /// Socket errors (connect + read + write + timeout) and non-2xx answers.
    pub errors: u64,
}

/// wrk for `secs` seconds with [`WRK_CONNECTIONS`] connections; `close` adds
/// `Connection: close`, so every request opens a new connection (wrk reconnects).
pub fn wrk(ns: &str, target: Ipv4Addr, secs: u64, close: bool) -> Result<WrkResult> {
    let d = format!("{secs}s");
    let c = WRK_CONNECTIONS.to_string();
    let url = format!("http://{target}:{HTTP_PORT}/{SMALL_FILE}");
    let mut argv = vec!["wrk", "-t1", "-c", &c, "-d", &d];
    if close {
        argv.extend(["-H", "Connection: close"]);
    }
    argv.push(&url);
    let out = run_client(ns, &argv, Duration::from_secs(secs + 15))?;
    parse_wrk(&out)
}

// === parsers ===

/// Gbit/s from `iperf3 -J` (the receiver's figure).
pub fn parse_iperf3(json: &str) -> Result<f64> {
    let bad = |reason: String| Error::Parse {
        tool: "iperf3",
        reason,
    };
    let v: Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        return Err(bad(err.to_owned()));
    }
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .map(|bps| bps / 1e9)
        .ok_or_else(|| bad("no end.sum_received.bits_per_second".into()))
}

/// (p50, p99) from sockperf's `---> percentile 50.000 =   10.829` lines (half round
/// trips, microseconds, as sockperf reports them).
pub fn parse_sockperf(out: &str) -> Result<(f64, f64)> {
    let pick = |pct: &str| {
        out.lines().find_map(|l| {
            let (_, rest) = l.split_once(&format!("percentile {pct} ="))?;
            rest.trim()
                .split(|c: char| c.is_whitespace() || c == '\x1b')
                .next()?
                .parse::<f64>()
                .ok()
        })
    };
    match (pick("50.000"), pick("99.000")) {
        (Some(p50), Some(p99)) => Ok((p50, p99)),
        _ => Err(Error::Parse {
            tool: "sockperf",
            reason: format!(
                "no percentile lines in: {}",
                out.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            ),
        }),
    }
}

/// Requests/s and errors from wrk's summary.
pub fn parse_wrk(out: &str) -> Result<WrkResult> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| Error::Parse {
            tool: "wrk",
            reason: format!("no Requests/sec in: {}", out.trim()),
        })?;
    let mut errors = 0;
    for l in out.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|kv| kv.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(rest) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Ok(WrkResult {
        requests_per_s: rps,
        errors,
    })
}

// === CPU accounting ===

/// Busy and total jiffies of all CPUs (`/proc/stat`), and the number of CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
    pub cpus: u64,
}

/// Parses `/proc/stat`'s aggregate `cpu` line (busy = all but idle and iowait).
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    let cpus = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64;
    Some(CpuTimes {
        busy: total - idle,
        total,
        cpus,
    })
}

/// The machine's CPU times now.
pub fn cpu_times() -> Option<CpuTimes> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Cores busy on average between two samples.
pub fn cores_busy(a: CpuTimes, b: CpuTimes) -> Option<f64> {
    let total = b.total.checked_sub(a.total)?;
    if total == 0 {
        return None;
    }
    Some((b.busy - a.busy) as f64 / total as f64 * a.cpus as f64)
}

/// utime + stime of a process, all threads, in clock ticks (`/proc/PID/stat`).
pub fn parse_pid_stat(text: &str) -> Option<u64> {
    // The command name may contain spaces; fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU ticks a process has used so far.
pub fn process_ticks(pid: i32) -> Option<u64> {
    parse_pid_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

// === datapath counters ===

/// `ovs-appctl dpif-netdev/pmd-stats-show`, summed over the main and PMD threads.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DpCounters {
    pub packets: u64,
    pub recirculations: u64,
    pub upcalls: u64,
}

/// Datapath work per packet and per connection over one measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpStats {
    pub passes_per_packet: f64,
    pub packets_per_conn: f64,
    pub upcalls_per_conn: f64,
}

impl DpCounters {
    /// Per packet and per connection, for `conns` connections (pure).
    pub fn per_connection(self, conns: f64) -> DpStats {
        let p = self.packets.max(1) as f64;
        let c = conns.max(1.0);
        DpStats {
            passes_per_packet: (self.packets + self.recirculations) as f64 / p,
            packets_per_conn: self.packets as f64 / c,
            upcalls_per_conn: self.upcalls as f64 / c,
        }
    }
}

/// Parses `pmd-stats-show`: sums `packets received`, `packet recirculations` and
/// `miss with success upcall` over every thread.
pub fn parse_pmd_stats(text: &str) -> DpCounters {
    let mut c = DpCounters::default();
    for l in text.lines() {
        let Some((k, v)) = l.trim().split_once(':') else {
            continue;
        };
        let Ok(v) = v.trim().parse::<u64>() else {
            continue;
        };
        match k {
            "packets received" => c.packets += v,
            "packet recirculations" => c.recirculations += v,
            "miss with success upcall" => c.upcalls += v,
            _ => {}
        }
    }
    c
}

fn appctl(ctl: &Path, cmd: &str) -> Option<String> {
    run_ok(Command::new("ovs-appctl").arg("-t").arg(ctl).arg(cmd)).ok()
}

/// Zeroes the datapath counters (best effort: a failure only loses the figure).
pub fn dp_stats_clear(ctl: &Path) {
    let _ = appctl(ctl, "dpif-netdev/pmd-stats-clear");
}

/// The datapath counters since the last [`dp_stats_clear`].
pub fn dp_stats(ctl: &Path) -> Option<DpCounters> {
    appctl(ctl, "dpif-netdev/pmd-stats-show").map(|t| parse_pmd_stats(&t))
}

/// The 1-minute load average (`/proc/loadavg`), to say how busy the machine was.
pub fn load_average_1m() -> Option<f64> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// The first field of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`; USER_HZ is 100 on Linux).
pub fn ticks_per_s() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        run_ok(Command::new("getconf").arg("CLK_TCK"))
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf3_json_gives_the_receivers_rate() {
        let json = r#"{"start":{},"end":{"sum_sent":{"bits_per_second":2.5e9},
            "sum_received":{"bits_per_second":2.25e9}}}"#;
        assert_eq!(parse_iperf3(json).unwrap(), 2.25);
        let failed = r#"{"start":{},"end":{},"error":"unable to connect to server"}"#;
        let err = parse_iperf3(failed).unwrap_err().to_string();
        assert!(err.contains("unable to connect"), "{err}");
    }

    #[test]
    fn sockperf_percentiles_are_read_through_colour_codes() {
        let out = "sockperf: \x1b[2;35m====> avg-latency=11.792 (std-dev=35.035)\x1b[0m\n\
                   sockperf: ---> percentile 99.999 = 3294.640\n\
                   sockperf: ---> percentile 99.000 =   29.930\n\
                   sockperf: ---> percentile 90.000 =   13.294\n\
                   sockperf: ---> percentile 50.000 =   10.829\n";
        assert_eq!(parse_sockperf(out).unwrap(), (10.829, 29.930));
        assert!(parse_sockperf("sockperf: Test ended\n").is_err());
    }

    #[test]
    fn wrk_summary_gives_rate_and_errors() {
        let ok = "Running 2s test @ http://10.0.0.1/small\n  1 threads and 10 connections\n\
                  18782 requests in 2.03s, 6.73MB read\nRequests/sec:   9242.41\n\
                  Transfer/sec:      3.31MB\n";
        assert_eq!(
            parse_wrk(ok).unwrap(),
            WrkResult {
                requests_per_s: 9242.41,
                errors: 0
            }
        );
        let errs = "  6154 requests in 2.01s, 2.18MB read\n  Socket errors: connect 3, read 2, write 0, timeout 1\n\
                    Non-2xx or 3xx responses: 4\nRequests/sec:   3056.12\n";
        assert_eq!(parse_wrk(errs).unwrap().errors, 10);
        assert!(parse_wrk("unable to connect to 10.0.0.1:80 Connection refused").is_err());
    }

    #[test]
    fn proc_stat_gives_busy_cores() {
        let a = parse_proc_stat(
            "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\ncpu1 50 0 50 400 0 0 0 0 0 0\n",
        )
        .unwrap();
        assert_eq!(
            a,
            CpuTimes {
                busy: 200,
                total: 1000,
                cpus: 2
            }
        );
        let b = parse_proc_stat(
            "cpu  250 0 150 900 0 0 0 0 0 0\ncpu0 1 0 0 0 0 0 0 0 0 0\ncpu1 1 0 0 0 0 0 0 0 0 0\n",
        )
        .unwrap();
        // 200 busy of 300 jiffies on 2 CPUs.
        assert!((cores_busy(a, b).unwrap() - 4.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn pid_stat_sums_user_and_system_time_even_with_spaces_in_the_name() {
        let stat =
            "1234 (ovs vswitchd) S 1 1234 1234 0 -1 4194560 1000 0 0 0 150 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(parse_pid_stat(stat), Some(200));
    }

    #[test]
    fn pmd_stats_are_summed_over_threads() {
        let text = "pmd thread numa_id 0 core_id 1:\n  packets received: 100\n  \
                    packet recirculations: 150\n  avg. datapath passes per packet: 2.50\n  \
                    miss with success upcall: 4\nmain thread:\n  packets received: 300\n  \
                    packet recirculations: 250\n  miss with success upcall: 6\n";
        let c = parse_pmd_stats(text);
        assert_eq!(
            c,
            DpCounters {
                packets: 400,
                recirculations: 400,
                upcalls: 10
            }
        );
        let s = c.per_connection(20.0);
        assert_eq!(
            s,
            DpStats {
                passes_per_packet: 2.0,
                packets_per_conn: 20.0,
                upcalls_per_conn: 0.5
            }
        );
    }

    #[test]
    fn loadavg_gives_the_one_minute_figure() {
        assert_eq!(parse_loadavg("3.52 2.10 1.05 4/812 31337\n"), Some(3.52));
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn nginx_keeps_everything_in_its_directory() {
        let conf = nginx_conf(Path::new("/tmp/x"));
        assert!(conf.contains("pid /tmp/x/nginx.pid;"));
        assert!(conf.contains("root /tmp/x/www;"));
        assert!(conf.contains("daemon off;"));
        assert!(!conf.contains("/var/"), "{conf}");
    }
}
