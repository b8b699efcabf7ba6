//! The traffic that runs through the whole campaign: scenario 1 (a pod to a ClusterIP in
//! its VPC), scenario 3 (the outside client to an EIP) and a DNS query loop, each a
//! request every [`INTERVAL`] on a thread of its own (so one request stuck on a dead path
//! does not hide the next), with a [`TIMEOUT_S`] limit.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::plan::{Flow, Sample};

/// Time between two requests of one flow.
pub const INTERVAL: Duration = Duration::from_millis(200);
/// A request not answered within this long failed.
pub const TIMEOUT_S: u32 = 2;

/// What one flow requests.
#[derive(Debug, Clone)]
pub struct Target {
    pub flow: Flow,
    /// The lab host it runs in.
    pub client: String,
    /// `IP:PORT` for HTTP, a name for DNS.
    pub target: String,
}

impl Target {
    /// One request; whether it was answered within [`TIMEOUT_S`].
    pub fn request(&self) -> bool {
        self.request_within(f64::from(TIMEOUT_S))
    }

    /// One request; whether it was answered within `secs` (DNS: whole seconds, at least 1).
    pub fn request_within(&self, secs: f64) -> bool {
        let ns = format!("ferry-{}", self.client);
        let t = match self.flow {
            Flow::Dns => (secs.ceil().max(1.0) as u32).to_string(),
            Flow::ClusterIp | Flow::Eip => format!("{secs:.1}"),
        };
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns]);
        match self.flow {
            Flow::Dns => {
                cmd.args(["dig", "+tries=1", &format!("+time={t}"), "+short"])
                    .args([self.target.as_str(), "A"]);
            }
            Flow::ClusterIp | Flow::Eip => {
                cmd.args(["curl", "-s", "-o", "/dev/null", "-m", &t])
                    .arg(format!("http://{}/", self.target));
            }
        }
        match cmd.stderr(Stdio::null()).output() {
            Ok(o) if o.status.success() => {
                self.flow != Flow::Dns || !String::from_utf8_lossy(&o.stdout).trim().is_empty()
            }
            _ => false,
        }
    }
}

/// A request's record: its flow, when it was sent, whether it was answered.
type Record = (Flow, Instant, bool);

/// The running flows.
pub struct Flows {
    records: Arc<Mutex<Vec<Record>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Flows {
    /// Starts one loop per target.
    pub fn start(targets: Vec<Target>) -> Flows {
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = targets
            .into_iter()
            .map(|t| {
                let (records, stop) = (records.clone(), stop.clone());
                std::thread::spawn(move || {
                    let t = Arc::new(t);
                    let mut pending = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let (t2, records) = (t.clone(), records.clone());
                        pending.push(std::thread::spawn(move || {
                            let at = Instant::now();
                            let ok = t2.request();
                            records
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((t2.flow, at, ok));
                        }));
                        pending.retain(|h: &std::thread::JoinHandle<()>| !h.is_finished());
                        std::thread::sleep(INTERVAL);
                    }
                    for h in pending {
                        let _ = h.join();
                    }
                })
            })
            .collect();
        Flows {
            records,
            stop,
            threads,
        }
    }

    /// The samples sent from `from` on, in seconds from `origin`.
    pub fn samples(&self, origin: Instant, from: Instant) -> Vec<Sample> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, at, _)| *at >= from)
            .map(|(flow, at, ok)| Sample {
                flow: *flow,
                at: signed_secs(origin, *at),
                ok: *ok,
            })
            .collect()
    }

    /// Whether every flow answered its last `n` requests (answered by now).
    pub fn steady(&self, n: usize) -> bool {
        let r = self.records.lock().unwrap_or_else(|e| e.into_inner());
        [Flow::ClusterIp, Flow::Eip, Flow::Dns].iter().all(|f| {
            let mine: Vec<&Record> = r.iter().filter(|(g, _, _)| g == f).collect();
            mine.len() >= n && mine[mine.len() - n..].iter().all(|(_, _, ok)| *ok)
        })
    }

    /// Stops the loops and waits for their last requests.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// `at - origin` in seconds, negative when `at` came first.
pub fn signed_secs(origin: Instant, at: Instant) -> f64 {
    if at >= origin {
        (at - origin).as_secs_f64()
    } else {
        -(origin - at).as_secs_f64()
    }
}
