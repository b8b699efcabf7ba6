//! Container logs as a kubelet keeps them (lab runtime): each run of each container writes
//! its stdout and stderr to its own file, `LOG_DIR/pods/NETNS/CONTAINER/RUN.log`, in the
//! CRI log format (`TIMESTAMP STREAM F|P CONTENT`, one line per output line, `P` for a
//! piece of a line longer than [`MAX_LINE`]), so `kubectl logs` can filter by time
//! (`--since`), show timestamps, and read the run before the last restart (`--previous`).
//! Only the current and the previous run of a container are kept.
//!
//! Pure: [`cri_lines`] (output bytes -> log lines), [`parse_line`] and [`select`] (log
//! text -> what `kubectl logs` shows). I/O: [`capture`] (threads copying a child's pipes
//! to its run file) and [`prune`].

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};

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

/// Sends the child's stdout and stderr to `path` (created, appended to, rotated past
/// [`MAX_LOG_BYTES`]) as CRI log lines, from two threads that end when the pipes close.
pub fn capture(child: &mut Child, path: &Path) -> std::io::Result<()> {
    capture_with_limit(child, path, MAX_LOG_BYTES)
}

fn capture_with_limit(child: &mut Child, path: &Path, max: u64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = Arc::new(Mutex::new(LogFile {
        path: path.to_path_buf(),
        file: File::options().create(true).append(true).open(path)?,
        max,
    }));
    fn pump(mut from: impl Read, stream: Stream, to: Arc<Mutex<LogFile>>) {
        let mut buf = vec![0u8; 8192];
        let mut pending = Vec::new();
        loop {
            let (n, eof) = match from.read(&mut buf) {
                Ok(0) | Err(_) => (0, true),
                Ok(n) => (n, false),
            };
            let lines = cri_lines(stream, Timestamp::now(), &mut pending, &buf[..n], eof);
            if !lines.is_empty() {
                to.lock().unwrap_or_else(|e| e.into_inner()).append(&lines);
            }
            if eof {
                return;
            }
        }
    }
    if let Some(out) = child.stdout.take() {
        let f = file.clone();
        std::thread::Builder::new()
            .name("log-stdout".into())
            .spawn(move || pump(out, Stream::Stdout, f))?;
    }
    if let Some(err) = child.stderr.take() {
        std::thread::Builder::new()
            .name("log-stderr".into())
            .spawn(move || pump(err, Stream::Stderr, file))?;
    }
    Ok(())
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
        let run = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<i32>().ok());
        let run = run.or_else(|| {
            name.to_str()
                .and_then(|n| n.strip_suffix(".log.1"))
                .and_then(|n| n.parse::<i32>().ok())
        });
        if run.is_some_and(|r| r < keep_from) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn output_becomes_cri_lines() {
        let at = t("2026-11-29T01:02:03.5Z");
        struct Case {
            name: &'static str,
            chunks: Vec<(&'static [u8], bool)>,
            want: &'static str,
            left: &'static [u8],
        }
        let cases = vec![
            Case {
                name: "two lines in one chunk",
                chunks: vec![(b"a\nb\n", false)],
                want: "2026-11-29T01:02:03.500000000Z stdout F a\n2026-11-29T01:02:03.500000000Z stdout F b\n",
                left: b"",
            },
            Case {
                name: "a line across chunks",
                chunks: vec![(b"he", false), (b"llo\nwor", false)],
                want: "2026-11-29T01:02:03.500000000Z stdout F hello\n",
                left: b"wor",
            },
            Case {
                name: "eof flushes an unfinished line",
                chunks: vec![(b"bye", false), (b"", true)],
                want: "2026-11-29T01:02:03.500000000Z stdout F bye\n",
                left: b"",
            },
            Case {
                name: "an empty line is a line",
                chunks: vec![(b"\n", false)],
                want: "2026-11-29T01:02:03.500000000Z stdout F \n",
                left: b"",
            },
        ];
        for c in cases {
            let mut pending = Vec::new();
            let mut out = Vec::new();
            for (chunk, eof) in c.chunks {
                out.extend(cri_lines(Stream::Stdout, at, &mut pending, chunk, eof));
            }
            assert_eq!(String::from_utf8(out).unwrap(), c.want, "{}", c.name);
            assert_eq!(pending, c.left, "{}", c.name);
        }
    }

    #[test]
    fn a_long_line_is_split_into_partial_pieces() {
        let mut pending = Vec::new();
        let long = vec![b'x'; MAX_LINE + 3];
        let out = cri_lines(
            Stream::Stderr,
            t("2026-11-29T00:00:00Z"),
            &mut pending,
            &long,
            false,
        );
        let line = parse_line(out.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(
            (line.stream, line.partial, line.content.len()),
            ("stderr", true, MAX_LINE)
        );
        assert_eq!(pending, b"xxx");
    }

    /// A child's output lands in its run's file as CRI lines, rotated past the limit.
    #[test]
    fn captured_output_is_rotated_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = run_path(dir.path(), "ferry-x", "c", 0);
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "for i in $(seq 1 200); do echo line-$i; done; echo oops >&2",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        capture_with_limit(&mut child, &path, 2000).unwrap();
        child.wait().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let both = || read(&path.with_extension("log.1")) + &read(&path);
        // Both pipes' last lines written (the two threads end in either order).
        while !(both().contains("stdout F line-200\n") && both().contains("stderr F oops\n"))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (cur, old) = (read(&path), read(&path.with_extension("log.1")));
        assert!(!old.is_empty(), "rotated once at least");
        assert!(cur.len() < 2000 + 8192, "{}", cur.len());
        let all = old + &cur;
        assert!(
            all.contains("stdout F line-200\n") && all.contains("stderr F oops\n"),
            "{all}"
        );
        assert!(all.lines().all(|l| parse_line(l.as_bytes()).is_some()));
        prune(dir.path(), "ferry-x", "c", 1);
        assert!(!path.exists() && !path.with_extension("log.1").exists());
    }

    #[test]
    fn kubectl_logs_options_select_lines() {
        let text = b"2026-11-29T00:00:01Z stdout F one\n\
2026-11-29T00:00:02Z stderr F two\n\
2026-11-29T00:00:03Z stdout P thr\n\
2026-11-29T00:00:03Z stdout F ee\n\
2026-11-29T00:00:04Z stdout F fo";
        struct Case {
            name: &'static str,
            opts: LogOptions,
            want: &'static str,
        }
        let cases = vec![
            Case {
                name: "everything complete",
                opts: LogOptions::default(),
                want: "one\ntwo\nthree\n",
            },
            Case {
                name: "tail",
                opts: LogOptions {
                    tail: Some(2),
                    ..Default::default()
                },
                want: "three\n",
            },
            Case {
                name: "since",
                opts: LogOptions {
                    since: Some(t("2026-11-29T00:00:02Z")),
                    ..Default::default()
                },
                want: "two\nthree\n",
            },
            Case {
                name: "timestamps",
                opts: LogOptions {
                    tail: Some(3),
                    timestamps: true,
                    ..Default::default()
                },
                want: "2026-11-29T00:00:02.000000000Z two\n2026-11-29T00:00:03.000000000Z thr2026-11-29T00:00:03.000000000Z ee\n",
            },
            Case {
                name: "limit bytes",
                opts: LogOptions {
                    limit_bytes: Some(5),
                    ..Default::default()
                },
                want: "one\nt",
            },
        ];
        for c in cases {
            let (out, end) = select(text, &c.opts);
            assert_eq!(String::from_utf8(out).unwrap(), c.want, "{}", c.name);
            assert_eq!(end, text.len() - "2026-11-29T00:00:04Z stdout F fo".len());
        }
    }
}
