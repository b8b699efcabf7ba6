//! What a member's own token may and may not do, probed against a live federation API
//! server with real requests (the lab's credential rows). Each probe is one request; the
//! answer's HTTP status is compared with what the member RBAC promises: its own Works,
//! global names and MemberCluster readable, its statuses writable, and a 403 for anything
//! of another member, any spec, and any list outside its namespace.

use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::plan::member_namespace;
use crate::types::{FederatedYusurService, MemberCluster, Work, WorkOwner, WorkSpec};

/// One probe: what was asked, whether the member should be allowed, what came back (`Ok`
/// for a success, else the HTTP status, or 0 for a failure without one).
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub what: String,
    pub allowed: bool,
    pub got: Result<(), u16>,
}

impl Probe {
    /// Allowed probes must succeed (a 404 of a missing object also proves the read was
    /// let through); refused ones must be answered 403.
    pub fn holds(&self) -> bool {
        matches!(
            (self.allowed, &self.got),
            (true, Ok(()) | Err(404)) | (false, Err(403))
        )
    }
}

fn status<T>(r: Result<T, kube::Error>) -> Result<(), u16> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err(e.code),
        Err(_) => Err(0),
    }
}

/// Probes member `me`'s client against the federation: its own objects, and `other`'s.
pub async fn probe(client: &Client, me: &str, other: &str) -> Vec<Probe> {
    let mine = member_namespace(me);
    let theirs = member_namespace(other);
    let mcs: Api<MemberCluster> = Api::all(client.clone());
    let my_works: Api<Work> = Api::namespaced(client.clone(), &mine);
    let their_works: Api<Work> = Api::namespaced(client.clone(), &theirs);
    let lp = ListParams::default();
    let heartbeat = json!({"status": {"version": env!("CARGO_PKG_VERSION")}});
    let pp = PatchParams::default();
    let mut out = Vec::new();
    let mut push =
        |what: String, allowed: bool, got: Result<(), u16>| out.push(Probe { what, allowed, got });
    push(
        format!("get memberclusters/{me}"),
        true,
        status(mcs.get(me).await),
    );
    push(
        format!("patch memberclusters/{me}/status"),
        true,
        status(mcs.patch_status(me, &pp, &Patch::Merge(&heartbeat)).await),
    );
    push(
        format!("list works -n {mine}"),
        true,
        status(my_works.list(&lp).await),
    );
    // A Work of its own, if one is placed: its status is the member's to write.
    if let Ok(list) = my_works.list(&lp).await
        && let Some(w) = list.items.first()
    {
        let st = json!({"status": w.status.clone().unwrap_or_default()});
        push(
            format!("patch works/{}/status -n {mine}", w.name_any()),
            true,
            status(
                my_works
                    .patch_status(&w.name_any(), &pp, &Patch::Merge(&st))
                    .await,
            ),
        );
        push(
            format!("patch works/{} (spec) -n {mine}", w.name_any()),
            false,
            status(
                my_works
                    .patch(
                        &w.name_any(),
                        &pp,
                        &Patch::Merge(&json!({"spec": {"generation": 0}})),
                    )
                    .await,
            ),
        );
    }
    push(
        format!("get memberclusters/{other}"),
        false,
        status(mcs.get(other).await),
    );
    push(
        format!("patch memberclusters/{other}/status"),
        false,
        status(
            mcs.patch_status(other, &pp, &Patch::Merge(&heartbeat))
                .await,
        ),
    );
    push(
        format!("patch memberclusters/{me} (labels: another tenant)"),
        false,
        status(
            mcs.patch(
                me,
                &pp,
                &Patch::Merge(
                    &json!({"metadata": {"labels": {crate::types::LABEL_TENANT: "other"}}}),
                ),
            )
            .await,
        ),
    );
    push(
        "list memberclusters".into(),
        false,
        status(mcs.list(&lp).await),
    );
    push(
        format!("list works -n {theirs}"),
        false,
        status(their_works.list(&lp).await),
    );
    push(
        format!("list works -n {theirs} (selector: member={me})"),
        false,
        status(
            their_works
                .list(
                    &ListParams::default().labels(&format!("federation.iaas.yusur.io/member={me}")),
                )
                .await,
        ),
    );
    push(
        "list works -A".into(),
        false,
        status(Api::<Work>::all(client.clone()).list(&lp).await),
    );
    push(
        "list federatedyusurservices -A".into(),
        false,
        status(
            Api::<FederatedYusurService>::all(client.clone())
                .list(&lp)
                .await,
        ),
    );
    push(
        format!("list configmaps -n {theirs} (their global names)"),
        false,
        status(
            Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &theirs)
                .list(&lp)
                .await,
        ),
    );
    push(
        "list secrets -n ferry-system (token hashes)".into(),
        false,
        status(
            Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
                client.clone(),
                ferry_apiserver::SYSTEM_NAMESPACE,
            )
            .list(&lp)
            .await,
        ),
    );
    let work = Work::new(
        "forged",
        WorkSpec {
            cluster: me.into(),
            target: me.into(),
            owner: WorkOwner::default(),
            generation: 1,
            annotation_policy: Default::default(),
            manifest: json!({}),
        },
    );
    push(
        format!("create works -n {mine} (a spec)"),
        false,
        status(my_works.create(&PostParams::default(), &work).await),
    );
    out
}
