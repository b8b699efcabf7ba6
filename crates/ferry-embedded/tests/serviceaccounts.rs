//! Every namespace gets a `default` ServiceAccount (as kube-controller-manager gives it),
//! again after it is deleted, so `kubectl create token default -n NS` works on `ferry up`.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

async fn wait_default(api: &Api<ServiceAccount>) -> String {
    for _ in 0..100 {
        if let Ok(sa) = api.get("default").await {
            return sa.metadata.uid.unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no default ServiceAccount after 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_gets_a_default_service_account_and_a_token_for_it() {
    let server = ferry_testkit::api::TestApiServer::start().await;
    let admin = server.client().await;
    let embedded = ferry_testkit::api::client_for(&server.embedded_kubeconfig()).await;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(ferry_embedded::run(embedded, rx));

    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "t1"}})).expect("ns");
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "t1");
    let first = wait_default(&sas).await;
    sas.delete("default", &DeleteParams::default())
        .await
        .expect("delete");
    let mut second = wait_default(&sas).await;
    for _ in 0..50 {
        if second != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        second = wait_default(&sas).await;
    }
    assert_ne!(first, second, "the deleted account was not created again");
    // The TokenRequest a `kubectl create token default -n t1` sends.
    let request: TokenRequest =
        serde_json::from_value(json!({"apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest", "spec": {"audiences": []}}))
        .expect("token request");
    let token = sas
        .create_token_request("default", &PostParams::default(), &request)
        .await
        .expect("a token for t1's default ServiceAccount");
    assert!(
        token.status.is_some_and(|s| !s.token.is_empty()),
        "no token in the answer"
    );

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    server.stop().await;
}
