//! Container logs as a kubelet keeps them (lab runtime): each run of each container writes
//! its stdout and stderr to its own file, `LOG_DIR/pods/NETNS/CONTAINER/RUN.log`, in the
//! CRI log format (`TIMESTAMP STREAM F|P CONTENT`, one line per output line, `P` for a
//! piece of a line longer than [`MAX_LINE`]), so `kubectl logs` can filter by time
//! (`--since`), show timestamps, and read the run before the last restart (`--previous`).
//! Only the current and the previous run of a container are kept.
//!
//! Pure: [`cri_lines`] (output bytes -> log lines), [`parse_line`] and [`select`] (log
//! text -> what `kubectl logs` shows). I/O: [`open_outputs`] (the files a container
//! writes its output to itself, so it survives the agent), [`follow`] (a thread copying
//! them into the run's log) and [`prune`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use jiff::Timestamp;

/// Longest line written as one log line; longer output is split into `P` pieces.
pub const MAX_LINE: usize = 16 * 1024;

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The directory of one workload's logs.
pub fn workload_dir(log_dir: &Path, netns: &str) -> PathBuf {
    log_dir.join("pods").join(netns)
}

/// The log file of run `run` (0 for the first, the restart count after) of a container.
pub fn run_path(log_dir: &Path, netns: &str, container: &str, run: i32) -> PathBuf {
    workload_dir(log_dir, netns)
        .join(container)
        .join(format!("{run}.log"))
}

fn format_time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()
}

/// Turns `chunk` (output of `stream` read at `at`) into CRI log lines, keeping an
/// unfinished line in `pending` for the next chunk; `eof` flushes it.
pub fn cri_lines(
    stream: Stream,
    at: Timestamp,
    pending: &mut Vec<u8>,
    chunk: &[u8],
    eof: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    let line = |content: &[u8], partial: bool, out: &mut Vec<u8>| {
        out.extend_from_slice(format_time(at).as_bytes());
        out.push(b' ');
        out.extend_from_slice(stream.as_str().as_bytes());
        out.extend_from_slice(if partial { b" P " } else { b" F " });
        out.extend_from_slice(content);
        out.push(b'\n');
    };
    pending.extend_from_slice(chunk);
    let mut start = 0;
    while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
        line(&pending[start..start + nl], false, &mut out);
        start += nl + 1;
    }
    pending.drain(..start);
    while pending.len() >= MAX_LINE {
        line(&pending[..MAX_LINE], true, &mut out);
        pending.drain(..MAX_LINE);
    }
    if eof && !pending.is_empty() {
        line(pending, false, &mut out);
        pending.clear();
    }
    out
}

/// One parsed log line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine<'a> {
    pub time: Timestamp,
    pub stream: &'a str,
    /// A piece of a longer line: shown without a newline.
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one CRI log line (without its newline).
pub fn parse_line(line: &[u8]) -> Option<LogLine<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    Some(LogLine {
        time,
        stream,
        partial: tag == b"P",
        content,
    })
}

/// What `kubectl logs` asked for (the kubelet's `PodLogOptions`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Only lines at or after this time (`sinceSeconds` / `sinceTime`).
    pub since: Option<Timestamp>,
    /// Each line prefixed with its RFC 3339 time.
    pub timestamps: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<usize>,
}

/// Appends what `kubectl logs` shows of one line.
pub fn render(line: &LogLine<'_>, timestamps: bool, out: &mut Vec<u8>) {
    if timestamps {
        out.extend_from_slice(format_time(line.time).as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(line.content);
    if !line.partial {
        out.push(b'\n');
    }
}

/// What `kubectl logs` shows of a log file's complete lines, and the offset just past the
/// last complete line (where following goes on).
pub fn select(text: &[u8], opts: &LogOptions) -> (Vec<u8>, usize) {
    let end = text
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let lines: Vec<LogLine<'_>> = text[..end]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(parse_line)
        .filter(|l| opts.since.is_none_or(|s| l.time >= s))
        .collect();
    let skip = opts
        .tail
        .map(|t| lines.len().saturating_sub(t))
        .unwrap_or(0);
    let mut out = Vec::new();
    for l in &lines[skip..] {
        render(l, opts.timestamps, &mut out);
    }
    if let Some(limit) = opts.limit_bytes {
        out.truncate(limit);
    }
    (out, end)
}

/// Largest a run's log file grows before it is rotated (the kubelet's default
/// `containerLogMaxSize`); the rotated file is `RUN.log.1`, one of them is kept.
pub const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;

/// A run's log file, rotated past `max` bytes.
struct LogFile {
    path: PathBuf,
    file: File,
    max: u64,
}

impl LogFile {
    fn append(&mut self, lines: &[u8]) {
        let _ = self.file.write_all(lines);
        let full = self.file.metadata().map(|m| m.len() >= self.max);
        if full.unwrap_or(false) {
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
            if let Ok(f) = File::options().create(true).append(true).open(&self.path) {
                self.file = f;
            }
        }
    }
}

/// The file a run's raw `stream` output goes to: the container writes it itself (opened
/// by the agent before the spawn and passed as the child's fd), so the output outlives the
/// agent, as containerd-shim's pipes outlive a kubelet: a killed agent never breaks its
/// containers' stdout/stderr (a pipe held by the agent gave them EPIPE/SIGPIPE).
pub fn raw_path(run_log: &Path, stream: Stream) -> PathBuf {
    run_log.with_extension(stream.as_str())
}

/// How much of a raw file is in the CRI log already (kept so a restarted agent goes on
/// where the dead one stopped).
fn pos_path(raw: &Path) -> PathBuf {
    let mut name = raw.as_os_str().to_owned();
    name.push(".pos");
    PathBuf::from(name)
}

/// Opens (creates, appends to) the raw stdout and stderr files of the run whose log is
/// `run_log`, for the child.
pub fn open_outputs(run_log: &Path) -> std::io::Result<(File, File)> {
    if let Some(dir) = run_log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let open = |s| {
        File::options()
            .create(true)
            .append(true)
            .open(raw_path(run_log, s))
    };
    Ok((open(Stream::Stdout)?, open(Stream::Stderr)?))
}

const TAIL_RUN: u8 = 0;
const TAIL_FINISH: u8 = 1;
const TAIL_ABANDON: u8 = 2;

/// A thread turning a run's raw output into its CRI log. Dropped, it stops where it is
/// (what an agent's death does: the next agent's [`follow`] goes on from there);
/// [`Tail::finish`] drains and flushes first (the process ended).
#[derive(Debug)]
pub struct Tail {
    state: Arc<AtomicU8>,
}

impl Tail {
    /// The run ended: copy what is left, an unfinished last line included, then stop.
    pub fn finish(&self) {
        let _ =
            self.state
                .compare_exchange(TAIL_RUN, TAIL_FINISH, Ordering::SeqCst, Ordering::SeqCst);
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ =
            self.state
                .compare_exchange(TAIL_RUN, TAIL_ABANDON, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// How often the raw files are read (the delay `kubectl logs -f` adds).
const TAIL_PERIOD: Duration = Duration::from_millis(100);

/// Follows the raw output of the run whose log is `path` into it as CRI log lines (the
/// log rotated past [`MAX_LOG_BYTES`]), from where the last follower stopped.
pub fn follow(path: &Path) -> std::io::Result<Tail> {
    follow_with_limit(path, MAX_LOG_BYTES)
}

/// One raw file being followed.
struct Raw {
    stream: Stream,
    path: PathBuf,
    file: File,
    /// Bytes of the raw file copied (an unfinished line included, see `pending`).
    pos: u64,
    pending: Vec<u8>,
}

impl Raw {
    /// Copies what was written since the last call; true if anything was.
    fn pump(&mut self, to: &mut LogFile, eof: bool, max: u64) -> bool {
        let mut buf = vec![0u8; 64 * 1024];
        let mut any = false;
        if self.file.seek(SeekFrom::Start(self.pos)).is_err() {
            return false;
        }
        loop {
            let n = match self.file.read(&mut buf) {
                Ok(0) | Err(_) => 0,
                Ok(n) => n,
            };
            let lines = cri_lines(
                self.stream,
                Timestamp::now(),
                &mut self.pending,
                &buf[..n],
                n == 0 && eof,
            );
            if !lines.is_empty() {
                to.append(&lines);
            }
            if n == 0 {
                break;
            }
            self.pos += n as u64;
            any = true;
        }
        if any {
            // The raw file is emptied once it is large and copied (as logrotate's
            // copytruncate: output written between the last read and this is lost).
            if self.pos >= max && self.pending.is_empty() && self.file.set_len(0).is_ok() {
                self.pos = 0;
            }
            let done = self.pos.saturating_sub(self.pending.len() as u64);
            let _ = std::fs::write(pos_path(&self.path), done.to_string());
        }
        any
    }
}

fn follow_with_limit(path: &Path, max: u64) -> std::io::Result<Tail> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut log = LogFile {
        path: path.to_path_buf(),
        file: File::options().create(true).append(true).open(path)?,
        max,
    };
    let mut raws = Vec::new();
    for stream in [Stream::Stdout, Stream::Stderr] {
        let raw = raw_path(path, stream);
        let file = File::options()
            .create(true)
            .append(true)
            .read(true)
            .open(&raw)?;
        let pos = std::fs::read_to_string(pos_path(&raw))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        raws.push(Raw {
            stream,
            path: raw,
            file,
            pos,
            pending: Vec::new(),
        });
    }
    let state = Arc::new(AtomicU8::new(TAIL_RUN));
    let st = state.clone();
    std::thread::Builder::new()
        .name("log-tail".into())
        .spawn(move || {
            loop {
                let now = st.load(Ordering::SeqCst);
                if now == TAIL_ABANDON {
                    return;
                }
                let finish = now == TAIL_FINISH;
                let mut any = false;
                for r in &mut raws {
                    any |= r.pump(&mut log, finish, max);
                }
                if finish {
                    return;
                }
                if !any {
                    std::thread::sleep(TAIL_PERIOD);
                }
            }
        })?;
    Ok(Tail { state })
}

/// Removes the log files of runs before `keep_from` (the previous run is kept for
/// `kubectl logs --previous`).
pub fn prune(log_dir: &Path, netns: &str, container: &str, keep_from: i32) {
    let dir = workload_dir(log_dir, netns).join(container);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        // `RUN.log`, `RUN.log.1`, `RUN.stdout`, `RUN.stderr.pos`, ...
        let run = name
            .to_str()
            .and_then(|n| n.split('.').next())
            .and_then(|n| n.parse::<i32>().ok());
        if run.is_some_and(|r| r < keep_from) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests;
