//! What this crate's integration tests share: Ferry's API server with the CRDs, the
//! controller's configuration against a real NB, and the log kept in memory.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use ferry_testkit::api::client_for;
use kube::Client;

/// Ferry's API server with the CRDs under `dir/api`, with an admin client and the
/// controller's client.
pub async fn api(dir: &Path) -> (ferry_apiserver::ApiServer, Client, Client) {
    let server = ferry_testkit::api::start_with_crds(ferry_apiserver::Config {
        data_dir: dir.join("api"),
        listen: "127.0.0.1:0".parse().unwrap(),
        limits: Default::default(),
        services: Default::default(),
    })
    .await;
    let admin = client_for(&dir.join("api/kubeconfig")).await;
    let controller = client_for(&dir.join("api/kubeconfig-controller")).await;
    (server, admin, controller)
}

/// The controller's configuration against the NB at `remote`: EIPs from
/// 198.18.0.100-199, the external network 198.18.0.0/24.
pub fn with_nb(identity: &str, remote: String) -> ferry_controller::ControllerConfig {
    ferry_controller::ControllerConfig {
        identity: identity.into(),
        eip_pool: Some("198.18.0.100-198.18.0.199".into()),
        network: Some(ferry_controller::network::NetworkConfig {
            remotes: vec![remote],
            tls: None,
            gateway_chassis: "ch1".into(),
            external: Some(ferry_controller::network::ExternalConfig {
                cidr: "198.18.0.0/24".parse().unwrap(),
                gateway: "198.18.0.1".parse().unwrap(),
            }),
            max_lb_per_txn: 500,
        }),
        ..Default::default()
    }
}

/// The controllers' log lines, kept in memory (the test binary's only subscriber: call it
/// once per binary).
pub fn captured_log() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    #[derive(Clone)]
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Sink(buf.clone());
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || sink.clone())
        .init();
    buf
}
