//! A UDP health check on loopback: a reply is success, an ICMP port unreachable (a closed
//! port) is failure, and silence (a port that takes datagrams and never answers) is what
//! `udpSilence` says: by default inconclusive, which keeps the backend Unknown (out of the
//! load balancers) instead of calling it Healthy.

use std::time::{Duration, SystemTime};

use ferry_agent::netns::SocketSource;
use ferry_agent::probe::{ProbeKind, ProbeState, ProbeTarget, Thresholds, execute};
use ferry_api::{ProbePhase, UdpSilence};

fn target(port: u16, silence: UdpSilence) -> ProbeTarget {
    ProbeTarget {
        kind: ProbeKind::Udp { silence },
        ip: "127.0.0.1".parse().expect("ip"),
        port,
    }
}

#[tokio::test]
async fn udp_silence_is_unknown_by_default_a_closed_port_unhealthy_a_reply_healthy() {
    let timeout = Duration::from_millis(300);
    // A silent port: bound, never answers (no ICMP either).
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    // A closed port: bind and drop, so the kernel answers port unreachable.
    let closed_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    // An echoing port.
    let echo = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let echo_port = echo.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });

    let run =
        async |port, silence| execute(&SocketSource::Host, &target(port, silence), timeout).await;
    let r = run(silent_port, UdpSilence::Unknown).await;
    assert!(r.inconclusive && !r.success, "silence by default: {r:?}");
    let r = run(silent_port, UdpSilence::Healthy).await;
    assert!(r.success && !r.inconclusive, "silence as Healthy: {r:?}");
    let r = run(silent_port, UdpSilence::Unhealthy).await;
    assert!(!r.success && !r.inconclusive, "silence as Unhealthy: {r:?}");
    let r = run(closed_port, UdpSilence::Unknown).await;
    assert!(
        !r.success && !r.inconclusive && r.message.contains("unreachable"),
        "{r:?}"
    );
    let r = run(echo_port, UdpSilence::Unknown).await;
    assert!(r.success, "{r:?}");

    // The state machine: a Healthy backend that goes silent is Unknown at once.
    let mut st = ProbeState::new(Thresholds::default());
    let now = SystemTime::now();
    st.observe(&run(echo_port, UdpSilence::Unknown).await, now);
    assert_eq!(st.phase(), ProbePhase::Healthy);
    let t = st.observe(&run(silent_port, UdpSilence::Unknown).await, now);
    assert_eq!(st.phase(), ProbePhase::Unknown);
    assert_eq!(
        t.map(|t| (t.from, t.to)),
        Some((ProbePhase::Healthy, ProbePhase::Unknown))
    );
    drop(silent);
}
