//! NB and SB as 3-member RAFT clusters (`raft_members: 3`, what `ferry up --ovn-raft 3`
//! runs): six `ovsdb-server`s, `ovn-northd` given every member, a change still reaching
//! the SB after `kill -9` of the NB leader and of the SB leader (the supervisor restarts
//! them and they rejoin), and a stop that leaves nothing. `ovn-northd` reaches both
//! through the leader proxies (`run/nb-leader.sock`, `run/sb-leader.sock`), and the
//! clusters run the election timer asked for.

use std::time::Duration;

use ferry_ovn_stack::process::is_gone;
use ferry_ovn_stack::{Daemon, OvnOptions, OvnStack, stop_from_dir};
use ferry_testkit::eventually;
use ferry_testkit::ovn::StackDir;

fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
}

#[test]
#[ignore = "needs OVN binaries"]
fn raft_nb_and_sb_survive_kill_9_of_their_leaders() -> anyhow::Result<()> {
    let lab = StackDir::new("raft")?;
    let opts = OvnOptions {
        raft_members: 3,
        election_timer_ms: Some(500),
        ..OvnOptions::central()
    };
    let stack = OvnStack::start(lab.path(), opts)?;
    for d in [Daemon::NbDb, Daemon::SbDb] {
        let (_, db) = ferry_ovn_stack::raft::schema(d);
        for m in stack.members(d) {
            // Followers apply it once the leader's log entry reaches them.
            eventually(
                "the election timer applied",
                Duration::from_secs(10),
                || {
                    let s = ferry_ovn_stack::jsonrpc::call(
                        &stack.paths().ctl_named(&m.name),
                        "cluster/status",
                        serde_json::json!([db]),
                        Duration::from_secs(2),
                    )?;
                    match ferry_ovn_stack::raft::parse_election_timer(s.as_str().unwrap_or("")) {
                        Some(500) => Ok(()),
                        other => Err(format!("{}: election timer {other:?}", m.name)),
                    }
                },
            )?;
        }
    }
    let northd_args = std::fs::read(format!(
        "/proc/{}/cmdline",
        stack.pid(Daemon::Northd).expect("northd")
    ))?;
    let northd_args = String::from_utf8_lossy(&northd_args).replace('\0', " ");
    let run = stack.paths().run_dir.clone();
    for stem in ["nb", "sb"] {
        let proxy = run.join(format!("{stem}-leader.sock"));
        assert!(
            northd_args.contains(&format!("unix:{}", proxy.display())),
            "northd is given the {stem} leader proxy: {northd_args}"
        );
    }
    let nb = stack.nb_remote();
    assert_eq!(nb.split(',').count(), 3, "three NB remotes: {nb}");
    assert_eq!(
        ferry_ovn_stack::raft::remotes_in(lab.path(), Daemon::NbDb),
        nb,
        "found from the directory alone"
    );
    assert_eq!(
        ferry_ovn_stack::raft::remotes_beside(&stack.paths().sb_sock),
        stack.sb_remote(),
        "found from member 1's socket"
    );
    let names: Vec<String> = [Daemon::NbDb, Daemon::SbDb]
        .iter()
        .flat_map(|d| stack.members(*d))
        .map(|m| m.name)
        .collect();
    assert_eq!(
        names,
        [
            "nb-ovsdb",
            "nb-ovsdb-2",
            "nb-ovsdb-3",
            "sb-ovsdb",
            "sb-ovsdb-2",
            "sb-ovsdb-3"
        ]
    );
    let mut pids: Vec<i32> = names.iter().filter_map(|n| stack.pid_named(n)).collect();
    assert_eq!(pids.len(), 6, "six ovsdb-servers run");
    stack.nbctl(&["--wait=sb", "ls-add", "before"])?;

    for d in [Daemon::NbDb, Daemon::SbDb] {
        let (leader, pid) = stack.leader(d).expect("a leader");
        kill9(pid);
        // The supervisor brings the member back; the others elect a new leader.
        let restarted = eventually(
            "the killed leader restarted",
            Duration::from_secs(30),
            || match stack.pid_named(&leader.name) {
                Some(p) if p != pid => Ok(p),
                _ => Err(format!("{} not restarted yet", leader.name)),
            },
        )?;
        pids.push(restarted);
    }
    // Once each cluster has elected a leader again (ovn-nbctl gives up on a cluster in
    // the middle of an election), ovn-nbctl and ovn-northd follow the new leaders.
    for d in [Daemon::NbDb, Daemon::SbDb] {
        eventually("a leader elected", Duration::from_secs(30), || {
            stack.leader(d)
        })?;
    }
    // The proxy reaches the new leaders: a `_Server` query through it is answered by a
    // connected leader.
    for (d, stem) in [(Daemon::NbDb, "nb"), (Daemon::SbDb, "sb")] {
        let (_, db) = ferry_ovn_stack::raft::schema(d);
        let proxy = run.join(format!("{stem}-leader.sock"));
        eventually(
            "the proxy answers as leader",
            Duration::from_secs(30),
            || {
                if ferry_ovn_stack::raft::is_leader(&proxy, db) {
                    Ok(())
                } else {
                    Err(format!("{} reached no leader", proxy.display()))
                }
            },
        )?;
    }
    stack.nbctl(&["--wait=sb", "ls-add", "after"])?;
    let dp = stack.sbctl(&[
        "--bare",
        "--columns=external_ids",
        "list",
        "Datapath_Binding",
    ])?;
    assert!(
        dp.contains("name=before") && dp.contains("name=after"),
        "SB datapaths: {dp}"
    );
    let switches = stack.nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"])?;
    let mut switches: Vec<&str> = switches.split_whitespace().collect();
    switches.sort_unstable();
    assert_eq!(
        switches,
        ["after", "before"],
        "nothing lost, nothing doubled"
    );

    let northd = stack.pid(Daemon::Northd).expect("northd");
    pids.push(northd);
    stack.stop()?;
    for pid in pids {
        assert!(is_gone(pid), "process {pid} still runs after stop");
    }
    assert_eq!(stop_from_dir(lab.path())?, Default::default());
    for stem in ["nb", "sb"] {
        let proxy = run.join(format!("{stem}-leader.sock"));
        assert!(!proxy.exists(), "{} left after stop", proxy.display());
    }
    Ok(())
}
