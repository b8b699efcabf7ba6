//! NB and SB as 3-member RAFT clusters (`raft_members: 3`, what `ferry up --ovn-raft 3`
//! runs): six `ovsdb-server`s, `ovn-northd` given every member, a change still reaching
//! the SB after `kill -9` of the NB leader and of the SB leader (the supervisor restarts
//! them and they rejoin), and a stop that leaves nothing.

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
        ..OvnOptions::central()
    };
    let stack = OvnStack::start(lab.path(), opts)?;
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
    Ok(())
}
