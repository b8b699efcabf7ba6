//! ProbeRunner update semantics on loopback (no root needed): timing changes keep the
//! phase, a target change starts over from Unknown, removal stops the probe.

use std::time::Duration;

use anyhow::{Result, bail};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use ferry_agent::probe::{
    Phase, ProbeEvent, ProbeKind, ProbeRunner, ProbeSpec, ProbeTarget, Thresholds,
};

fn spec(port: u16, period_ms: u64, failure: u32) -> ProbeSpec {
    ProbeSpec {
        id: "default/np-1".into(),
        netns: None,
        target: ProbeTarget {
            kind: ProbeKind::Tcp,
            ip: [127, 0, 0, 1].into(),
            port,
        },
        period: Duration::from_millis(period_ms),
        timeout: Duration::from_millis(100),
        thresholds: Thresholds {
            success: 1,
            failure,
        },
    }
}

async fn next(
    rx: &mut mpsc::Receiver<ProbeEvent>,
    within: Duration,
) -> Result<(Phase, Phase, String)> {
    match tokio::time::timeout(within, rx.recv()).await {
        Ok(Some(ev)) => Ok((
            ev.transition.from,
            ev.transition.to,
            ev.transition.result.message,
        )),
        Ok(None) => bail!("channel closed"),
        Err(_) => bail!("no transition within {within:?}"),
    }
}

#[tokio::test]
async fn update_keeps_or_resets_phase_and_remove_stops() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let open = listener.local_addr()?.port();
    let server = tokio::spawn(async move {
        while let Ok((c, _)) = listener.accept().await {
            drop(c);
        }
    });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };

    let (mut runner, mut rx) = ProbeRunner::new(8);
    runner.upsert(spec(open, 200, 3))?;
    let (from, to, msg) = next(&mut rx, Duration::from_secs(2)).await?;
    assert_eq!((from, to), (Phase::Unknown, Phase::Healthy), "{msg}");

    // Same target, new timings and thresholds: still Healthy, no transition.
    runner.upsert(spec(open, 100, 2))?;
    // Re-sending an identical spec is a no-op too.
    runner.upsert(spec(open, 100, 2))?;
    assert!(
        tokio::time::timeout(Duration::from_millis(600), rx.recv())
            .await
            .is_err(),
        "a timing change must not produce a transition"
    );

    // New target: back to Unknown at once, then Unhealthy after 2 failures.
    runner.upsert(spec(closed, 100, 2))?;
    let (from, to, msg) = next(&mut rx, Duration::from_secs(1)).await?;
    assert_eq!(
        (from, to, msg.as_str()),
        (Phase::Healthy, Phase::Unknown, "probe target changed")
    );
    let (from, to, msg) = next(&mut rx, Duration::from_secs(2)).await?;
    assert_eq!((from, to), (Phase::Unknown, Phase::Unhealthy));
    assert!(msg.contains("Connection refused"), "{msg}");

    // Removed: no more events, nothing scheduled.
    assert!(runner.remove("default/np-1"));
    assert!(!runner.remove("default/np-1"));
    assert!(runner.is_empty());
    runner
        .upsert(ProbeSpec {
            period: Duration::ZERO,
            ..spec(open, 100, 2)
        })
        .expect_err("a zero period is refused");
    assert!(
        tokio::time::timeout(Duration::from_millis(400), rx.recv())
            .await
            .is_err()
    );
    server.abort();
    Ok(())
}
