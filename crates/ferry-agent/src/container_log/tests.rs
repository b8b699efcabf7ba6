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

fn wait_for(what: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !what() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A child's output lands in its run's file as CRI lines, rotated past the limit.
#[test]
fn captured_output_is_rotated_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = run_path(dir.path(), "ferry-x", "c", 0);
    let (out, err) = open_outputs(&path).unwrap();
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            "for i in $(seq 1 200); do echo line-$i; done; echo oops >&2",
        ])
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    let tail = follow_with_limit(&path, 2000).unwrap();
    child.wait().unwrap();
    tail.finish();
    let both = || read(&path.with_extension("log.1")) + &read(&path);
    wait_for(|| both().contains("stdout F line-200\n") && both().contains("stderr F oops\n"));
    let (cur, old) = (read(&path), read(&path.with_extension("log.1")));
    assert!(!old.is_empty(), "rotated once at least");
    assert!(cur.len() < 2000 + 64 * 1024, "{}", cur.len());
    let all = old + &cur;
    assert!(
        all.contains("stdout F line-200\n") && all.contains("stderr F oops\n"),
        "{all}"
    );
    assert!(all.lines().all(|l| parse_line(l.as_bytes()).is_some()));
    prune(dir.path(), "ferry-x", "c", 1);
    assert!(!path.exists() && !path.with_extension("log.1").exists());
    assert!(!raw_path(&path, Stream::Stdout).exists());
}

/// Issue 15: the agent's death (its follower dropped) leaves the container writing,
/// and the next agent's follower goes on from where the last one stopped.
#[test]
fn output_outlives_the_follower() {
    let dir = tempfile::tempdir().unwrap();
    let path = run_path(dir.path(), "ferry-x", "c", 0);
    let (out, err) = open_outputs(&path).unwrap();
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            "i=0; while :; do i=$((i+1)); echo out-$i; echo err-$i >&2; sleep 0.02; done",
        ])
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    let tail = follow(&path).unwrap();
    wait_for(|| read(&path).contains("stdout F out-3\n"));
    drop(tail);
    std::thread::sleep(TAIL_PERIOD * 3);
    let log_then = read(&path).len();
    let raw = raw_path(&path, Stream::Stderr);
    let raw_then = read(&raw).len();
    wait_for(|| read(&raw).len() > raw_then + 100);
    assert!(child.try_wait().unwrap().is_none(), "still running");
    assert!(read(&raw).len() > raw_then, "still writing");
    assert_eq!(read(&path).len(), log_then, "nobody follows");
    let tail = follow(&path).unwrap();
    let n: usize = read(&raw)
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("err-"))
        .and_then(|n| n.parse().ok())
        .unwrap();
    wait_for(|| read(&path).contains(&format!("stderr F err-{}\n", n + 5)));
    let _ = child.kill();
    child.wait().unwrap();
    tail.finish();
    let log = read(&path);
    // Every line once, none lost or doubled across the two followers.
    for i in 1..=n + 5 {
        assert_eq!(log.matches(&format!(" F out-{i}\n")).count(), 1, "out-{i}");
        assert_eq!(log.matches(&format!(" F err-{i}\n")).count(), 1, "err-{i}");
    }
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
