//! Watches the agent starts again, on new connections, once it has been cut off the API
//! server and reaches it again ([`restart_all`], called when the agent's Lease is renewed
//! after failed renewals).
//!
//! Why: a watch whose connection lost packets during a partition is not closed (nothing
//! tells either end); its data waits for TCP's retransmissions, which back off, so after a
//! 30 s partition a watch delivered again only about 20 s after the network healed (issue
//! 15's fault campaign: node2's NetworkProbes stayed `Unknown` in the controller's eyes
//! that long, as the agent's own copy still showed them `Healthy`). kube's client sets no
//! read timeout (watches may be quiet for minutes), and kube-runtime's watcher notices a
//! silent watch only after its server-side timeout (290 s) plus 5 s. A restarted watcher
//! lists again, so nothing missed meanwhile is lost.

use std::sync::OnceLock;

use futures::{Stream, StreamExt};
use kube::Api;
use kube::runtime::watcher;
use tokio::sync::watch;

/// Counts the restarts asked for; every [`restartable`] watch follows it.
fn signal() -> &'static watch::Sender<u64> {
    static SIGNAL: OnceLock<watch::Sender<u64>> = OnceLock::new();
    SIGNAL.get_or_init(|| watch::channel(0).0)
}

/// Starts every [`restartable`] watch of this process again.
pub fn restart_all() {
    signal().send_modify(|n| *n += 1);
}

/// `watcher(api, config)`, started again (with a list, on a new request) after each
/// [`restart_all`].
pub fn restartable<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let restarts = signal().subscribe();
    futures::stream::repeat_with(move || {
        let mut r = restarts.clone();
        r.mark_unchanged();
        let restart = async move {
            // The sender is static and never dropped; pending for ever rather than
            // restarting in a loop if it ever were.
            if r.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        watcher(api.clone(), config.clone()).take_until(restart)
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_testkit::api::TestApiServer;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::PostParams;

    /// A restart lists again: the watch's stream sees a new `Init` after `restart_all`.
    #[tokio::test]
    async fn restart_all_lists_again() {
        let api = TestApiServer::start().await;
        let client = api.client().await;
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("a".into());
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create");
        let mut events = Box::pin(restartable(cms.clone(), watcher::Config::default()));
        let mut inits = 0;
        let mut restarted = false;
        while inits < 2 {
            let ev = tokio::time::timeout(std::time::Duration::from_secs(30), events.next())
                .await
                .expect("a watch event within 30 s")
                .expect("the stream goes on");
            match ev {
                Ok(watcher::Event::InitDone) => {
                    inits += 1;
                    if !restarted {
                        restarted = true;
                        restart_all();
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("watch error: {e}"),
            }
        }
        assert_eq!(inits, 2);
        api.stop().await;
    }
}
