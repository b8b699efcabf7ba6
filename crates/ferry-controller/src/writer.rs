//! Writes what passes decided (each service's status, then its generated objects) off the
//! planning loop, so that the next change reaches the NB without waiting for the API
//! writes of the previous one. The newest decision per service wins: a burst of passes
//! over one service is written once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use ferry_api::YusurServiceStatus;
use futures::StreamExt;
use kube::Client;
use tokio::sync::Notify;

use crate::reconcile::{self, ServiceOutcome};
use crate::world::Caches;

/// Decisions waiting to be written.
#[derive(Clone, Default)]
pub struct Writes {
    queue: Arc<Mutex<BTreeMap<String, (ServiceOutcome, YusurServiceStatus)>>>,
    notify: Arc<Notify>,
}

impl Writes {
    /// Queues a service's decision, replacing an older one not yet written.
    pub fn push(&self, outcome: ServiceOutcome, status: YusurServiceStatus) {
        if let Ok(mut q) = self.queue.lock() {
            q.insert(outcome.key.clone(), (outcome, status));
        }
        self.notify.notify_one();
    }

    /// Drops what is not written yet (leadership lost).
    pub fn clear(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.clear();
        }
    }

    fn take(&self) -> Vec<(ServiceOutcome, YusurServiceStatus)> {
        self.queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q).into_values().collect())
            .unwrap_or_default()
    }

    /// Writes queued decisions until the task is dropped: statuses first (Programmed
    /// follows the NB commit that already happened), then the generated objects.
    pub async fn run(self, client: Client, c: Caches) {
        // The last status written per service (uid, status): the cache may not show it yet.
        let mut written: HashMap<String, (String, YusurServiceStatus)> = HashMap::new();
        loop {
            let batch = self.take();
            if batch.is_empty() {
                self.notify.notified().await;
                continue;
            }
            let writes: Vec<_> = batch
                .iter()
                .map(|(o, st)| {
                    let uid = o.service.metadata.uid.clone().unwrap_or_default();
                    let before = written
                        .get(&o.key)
                        .filter(|(u, _)| *u == uid)
                        .map(|(_, w)| w.clone())
                        .unwrap_or_else(|| o.service.status.clone().unwrap_or_default());
                    let client = client.clone();
                    async move {
                        let now = reconcile::write_status(&client, o, st.clone(), &before).await;
                        (o.key.clone(), now.map(|s| (uid, s)))
                    }
                })
                .collect();
            let results: Vec<(String, Option<(String, YusurServiceStatus)>)> =
                futures::stream::iter(writes)
                    .buffer_unordered(16)
                    .collect()
                    .await;
            for (k, st) in results {
                match st {
                    Some(st) => written.insert(k, st),
                    None => written.remove(&k),
                };
            }
            let outcomes: Vec<ServiceOutcome> = batch.into_iter().map(|(o, _)| o).collect();
            reconcile::write_service_objects(&client, &c, &outcomes).await;
        }
    }
}
