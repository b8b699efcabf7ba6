//! The agent's requests across a partition that leaves its connection half-open (issue
//! 15: after node2's agent was cut off the API server, its requests waited on the old
//! connection for TCP's retransmissions). A TCP relay in front of a real API server
//! drops everything once cut, for good on the connections it carried then (as a
//! connection whose segments were lost keeps backing off), and relays new connections
//! again once healed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ferry_testkit::api::TestApiServer;
use k8s_openapi::api::coordination::v1::Lease;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// The relay: `cut` drops every byte; a connection open while cut never carries again.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped on every cut: connections from an older epoch stay dead.
    epoch: Arc<AtomicU64>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let (cut, epoch) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (c, e) = (cut.clone(), epoch.clone());
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let born = e.load(Ordering::SeqCst);
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::spawn(pipe(dr, uw, c.clone(), e.clone(), born));
                tokio::spawn(pipe(ur, dw, c.clone(), e.clone(), born));
            }
        });
        Relay { addr, cut, epoch }
    }

    fn cut(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.cut.store(true, Ordering::SeqCst);
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies one direction; drops what it reads while cut or once its connection outlived a
/// cut, without closing anything (nothing tells the ends).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
    born: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                // An end that closes while cut is not told to the other end either.
                if !cut.load(Ordering::SeqCst) && epoch.load(Ordering::SeqCst) == born {
                    let _ = to.shutdown().await;
                    return;
                }
                // Holds `to` open.
                return std::future::pending().await;
            }
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) || epoch.load(Ordering::SeqCst) != born {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn lease_renewal_gives_up_a_half_open_connection_and_renews_after_the_partition() {
    let api = TestApiServer::start().await;
    let relay = Relay::start(api.addr).await;
    let kc = kube::config::Kubeconfig::read_from(api.node_kubeconfig("node2")).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    config.cluster_url = format!("https://{}", relay.addr).parse().expect("url");
    let client = Client::try_from(config).expect("client");

    let leases = Api::<Lease>::namespaced(api.client().await, ferry_api::AGENT_LEASE_NAMESPACE);
    let renewed = || async {
        let lease = leases
            .get(&ferry_api::agent_lease_name("node2"))
            .await
            .expect("the agent Lease");
        let spec = lease.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("node2"));
        spec.renew_time.expect("renew time").0
    };
    renew_lease(&client, "node2", ferry_api::AgentLeaseTiming::KUBELET)
        .await
        .expect("renewal through the relay");
    let first = renewed().await;
    relay.cut();
    // Without a bound the renewal waits on the pooled connection for ever; the outer
    // limit only turns that hang into a failure.
    let during = tokio::time::timeout(
        REQUEST_TIMEOUT * 6,
        renew_lease(&client, "node2", ferry_api::AgentLeaseTiming::KUBELET),
    )
    .await
    .expect("the renewal hung on the half-open connection");
    assert!(
        matches!(during, Err(RequestError::TimedOut(_))),
        "{during:?}"
    );
    relay.heal();
    tokio::time::timeout(
        REQUEST_TIMEOUT * 6,
        renew_lease(&client, "node2", ferry_api::AgentLeaseTiming::KUBELET),
    )
    .await
    .expect("the renewal after the partition hung (old connection reused?)")
    .expect("renewal after the partition");
    let last = renewed().await;
    assert!(last > first, "renewed at {first}, then {last}");
    api.stop().await;
}
