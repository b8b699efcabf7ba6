//! Ferry's embedded Kubernetes-compatible API server.
//!
//! It serves discovery, OpenAPI, CRUD with every PATCH kind, list/watch, tables, status
//! subresources, finalizers and garbage collection over [`ferry_store`], behind TLS and bearer
//! tokens with RBAC enforced (users, groups, ServiceAccounts, one identity per node agent),
//! so that `kubectl` and kube-rs cannot tell it from kube-apiserver for everything
//! Ferry and its users do. Reads and watches are served from an in-memory watch cache.
//! It must not know anything about OVN or Ferry's controllers: those are plain clients.

mod auth;
mod authz;
mod bootstrap;
mod cache;
mod discovery;
mod gc;
mod lanes;
pub mod member_token;
mod node_proxy;
mod node_restriction;
mod objects;
mod openapi;
mod patch;
mod protobuf;
pub mod rbac;
mod resources;
mod reviews;
mod schema;
mod selectors;
mod server;
mod service_admission;
mod status;
mod subresources;
mod table;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferry_store::{EventKind, Store, StoreOptions};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use auth::{ADMIN_USER, EMBEDDED_USER, SYSTEM_NAMESPACE, Tokens};
/// Where the server keeps its objects: `embedded` (default) or an etcd cluster; parsing a
/// `--store` value fails with a `StoreError`.
pub use ferry_store::{Backend as StoreBackend, StoreError};
pub use server::Limits;
pub use service_admission::ServiceNetwork;

use crate::auth::Authenticator;
use crate::authz::Authorizer;
use crate::cache::{Cache, Cached};
use crate::objects::{FieldValidation, Objects, WriteOptions};
use crate::resources::Registry;
use crate::service_admission::ServiceAdmission;

const CRD_PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("opening the store in {path}: {source}")]
    Store {
        path: PathBuf,
        source: ferry_store::StoreError,
    },
    #[error("connecting to the etcd store: {source}")]
    Etcd { source: ferry_store::StoreError },
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("installing {name}: {message}")]
    Install { name: String, message: String },
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub limits: Limits,
    /// Where Services get cluster IPs and node ports.
    pub services: ServiceNetwork,
}

/// A running API server; dropping the shutdown sender (or calling `shutdown`) stops it.
pub struct ApiServer {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    /// The tokens of the fixed identities as they were at start.
    pub tokens: Tokens,
    data_dir: PathBuf,
    pki: tls::Pki,
    auth: Arc<Authenticator>,
    authz: Arc<Authorizer>,
    objects: Objects,
    registry: Arc<RwLock<Registry>>,
    shutdown: watch::Sender<bool>,
    serve: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Opens the embedded store, fills the cache, writes the PKI and kubeconfigs, and starts
    /// serving.
    pub async fn start(config: Config) -> Result<ApiServer, ApiServerError> {
        ApiServer::start_on(config, &StoreBackend::Embedded).await
    }

    /// [`ApiServer::start`] on the store `backend` names. On etcd, several servers (each with
    /// its own data dir for PKI and tokens) serve the same objects: each one's watch cache
    /// follows etcd's watch, so a write through one reaches the others' watches.
    pub async fn start_on(
        config: Config,
        backend: &StoreBackend,
    ) -> Result<ApiServer, ApiServerError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| ApiServerError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let store_path = dir.join("store.redb");
        let options = StoreOptions {
            retain_revisions: Some(200_000),
            // The cache's feed is the only store watch. If it falls this far behind, the
            // store drops it and the feed re-lists and re-parses every object (seconds at
            // 450k objects, every write waiting on the cache meanwhile); 4,096 events was
            // four seconds of writes at 10,000 nodes. Events share their values' bytes.
            watch_buffer: 1 << 16,
            // The watch cache holds every object already; the store is read for the keys
            // written (their current revision) and on start. redb's default 1 GiB of
            // copies was a third of this server's memory at 450k objects.
            cache_bytes: 128 << 20,
            ..StoreOptions::default()
        };
        let store = match backend {
            StoreBackend::Embedded => {
                Store::open(&store_path, options).map_err(|source| ApiServerError::Store {
                    path: store_path.clone(),
                    source,
                })?
            }
            StoreBackend::Etcd(etcd) => Store::connect_etcd(etcd.clone(), options)
                .await
                .map_err(|source| ApiServerError::Etcd { source })?,
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ApiServerError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ApiServerError::Listen {
                addr: config.listen,
                source,
            })?;
        let pki = tls::Pki::ensure(dir, addr)?;
        let auth = Arc::new(Authenticator::load_or_create(dir).map_err(|source| {
            ApiServerError::DataDir {
                path: dir.clone(),
                source,
            }
        })?);
        let tokens = auth.tokens();
        let authz = Arc::new(Authorizer::new());

        let cache = Cache::new(config.limits.watch_cache_history.max(1), 65_536);
        let registry = Arc::new(RwLock::new(Registry::with_builtins()));
        let services = Arc::new(ServiceAdmission::new(config.services.clone()));
        let (first_fill_tx, mut first_fill) = watch::channel(false);
        tokio::spawn(feed_cache(
            store.clone(),
            cache.clone(),
            registry.clone(),
            services.clone(),
            authz.clone(),
            first_fill_tx,
        ));
        let _ = first_fill.wait_for(|done| *done).await;

        let objects = Objects {
            store: store.clone(),
            cache: cache.clone(),
            services,
        };
        ensure_namespaces(&objects, &registry).await?;
        ensure_bootstrap(&objects, &registry).await?;
        tokio::spawn(gc::run(objects.clone(), cache.clone(), registry.clone()));

        let server = server::Server::new(
            objects.clone(),
            registry.clone(),
            auth.clone(),
            authz.clone(),
            config.limits.clone(),
        );
        let app = axum::Router::new()
            .fallback(server::handle)
            .with_state(server);
        let tls_config = pki.server_config()?;
        // The kubeconfig is written before serving, so whoever waits for it can connect.
        tls::write_kubeconfigs(dir, &pki, addr, &tokens)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let serve = tokio::spawn(serve(listener, tls_config, app, shutdown_rx, store));
        tracing::info!(%addr, kubeconfig = %dir.join("kubeconfig").display(), "API server serving");
        Ok(ApiServer {
            addr,
            kubeconfig: dir.join("kubeconfig"),
            tokens,
            data_dir: dir.clone(),
            pki,
            auth,
            authz,
            objects,
            registry,
            shutdown,
            serve,
        })
    }

    /// Creates each CRD that is missing and updates any whose spec differs.
    pub async fn install_crds(&self, crds: &[Value]) -> Result<(), ApiServerError> {
        let rt = {
            let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
            reg.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
                .cloned()
        };
        let Some(rt) = rt else { return Ok(()) };
        let opts = WriteOptions {
            dry_run: false,
            field_manager: Some("ferry".into()),
            field_validation: FieldValidation::Ignore,
        };
        for crd in crds {
            let name = crd["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let err = |e: status::ApiError| ApiServerError::Install {
                name: name.clone(),
                message: e.message,
            };
            match self.objects.current(&rt, None, &name).await.map_err(err)? {
                None => {
                    self.objects
                        .create(&rt, None, crd.clone(), &opts)
                        .await
                        .map_err(err)?;
                }
                Some(cur) if cur.0["spec"] != crd["spec"] => {
                    let mut next = cur.0.clone();
                    next["spec"] = crd["spec"].clone();
                    self.objects
                        .update(&rt, None, &name, next, cur, None, &opts, "Update")
                        .await
                        .map_err(err)?;
                }
                Some(_) => {}
            }
        }
        // The registry follows the cache; wait until the new kinds are served.
        self.objects
            .cache
            .wait_for(self.objects.store.current_revision())
            .await;
        Ok(())
    }

    /// Writes `DIR/kubeconfig-node-NODE`: the identity `system:node:NODE` (group
    /// `system:nodes`) for that node's agent, minted on first use and kept across restarts.
    /// It may read what the `ferry-agent` ClusterRole grants and write only its own Node and
    /// Lease and the status of the Pods and NetworkProbes assigned to it.
    pub fn node_kubeconfig(&self, node: &str) -> Result<PathBuf, ApiServerError> {
        let token = self
            .auth
            .node_token(node)
            .map_err(|source| ApiServerError::DataDir {
                path: self.data_dir.clone(),
                source,
            })?;
        let path = self.data_dir.join(format!("kubeconfig-node-{node}"));
        tls::write_kubeconfig(&path, &self.pki, self.addr, &format!("node-{node}"), &token)?;
        Ok(path)
    }

    /// The embedded controllers' kubeconfig (`system:ferry:embedded-controllers`: what
    /// kube-scheduler and kube-controller-manager do, everything in the core, apps, batch,
    /// discovery, coordination and events groups; Ferry's kinds read-only but their status;
    /// nothing of RBAC or CRDs).
    pub fn embedded_kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig-embedded")
    }

    /// Turns RBAC enforcement off (every authenticated request allowed, as kube-apiserver's
    /// `--authorization-mode=AlwaysAllow`) or back on; only to measure what it costs.
    pub fn set_rbac_enforced(&self, enforced: bool) {
        self.authz.set_enforced(enforced);
    }

    /// Stops accepting, ends the serving task and closes the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.serve.await;
    }
}

async fn ensure_namespaces(
    objects: &Objects,
    registry: &Arc<RwLock<Registry>>,
) -> Result<(), ApiServerError> {
    let rt = registry
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get("", "v1", "namespaces")
        .cloned();
    let Some(rt) = rt else { return Ok(()) };
    let opts = WriteOptions {
        dry_run: false,
        field_manager: None,
        field_validation: FieldValidation::Ignore,
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        if objects
            .current(&rt, None, ns)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Err(e) = objects.create(&rt, None, obj, &opts).await
                && e.code != 409
            {
                return Err(ApiServerError::Install {
                    name: format!("namespace {ns}"),
                    message: e.message,
                });
            }
        }
    }
    Ok(())
}

/// Creates the bootstrap RBAC objects (see [`bootstrap`]) that are missing and brings back
/// the rules and subjects of those not marked `autoupdate: "false"`.
async fn ensure_bootstrap(
    objects: &Objects,
    registry: &Arc<RwLock<Registry>>,
) -> Result<(), ApiServerError> {
    let install = |name: String, message: String| ApiServerError::Install { name, message };
    let opts = WriteOptions {
        dry_run: false,
        field_manager: Some("ferry-bootstrap".into()),
        field_validation: FieldValidation::Ignore,
    };
    let objs =
        bootstrap::objects().map_err(|e| install("deploy/rbac.yaml".into(), e.to_string()))?;
    for obj in objs {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let kind = obj["kind"].as_str().unwrap_or_default();
        let rt = registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .all()
            .find(|t| t.group == group && t.version == version && t.kind == kind)
            .cloned();
        let Some(rt) = rt else { continue };
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ns = obj["metadata"]["namespace"].as_str().map(String::from);
        let ns = ns.as_deref().filter(|_| rt.namespaced);
        let what = format!("{kind} {name}");
        match objects.current(&rt, ns, &name).await {
            Ok(None) => match objects.create(&rt, ns, obj.clone(), &opts).await {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(install(what, e.message)),
            },
            Ok(Some(cur)) => {
                let want = bootstrap::managed_fields(&obj);
                if want.is_some()
                    && bootstrap::autoupdate(&cur.0)
                    && bootstrap::managed_fields(&cur.0) != want
                {
                    let mut next = cur.0.clone();
                    for k in ["rules", "aggregationRule", "roleRef", "subjects"] {
                        match obj.get(k) {
                            Some(v) => next[k] = v.clone(),
                            None => {
                                if let Some(m) = next.as_object_mut() {
                                    m.remove(k);
                                }
                            }
                        }
                    }
                    objects
                        .update(&rt, ns, &name, next, cur, None, &opts, "Update")
                        .await
                        .map_err(|e| install(what, e.message))?;
                }
            }
            Err(e) => return Err(install(what, e.message)),
        }
    }
    Ok(())
}

/// Keeps the cache (and the served CRDs, and the ledger of service addresses) in step with
/// the store, re-listing if the store watch is lost. The ledger is updated before the cache,
/// so a writer that waited for the cache sees its write in the ledger too.
async fn feed_cache(
    store: Store,
    cache: Arc<Cache>,
    registry: Arc<RwLock<Registry>>,
    services: Arc<ServiceAdmission>,
    authz: Arc<Authorizer>,
    first_fill: watch::Sender<bool>,
) {
    loop {
        let (kvs, rev) = match store.list("/registry/").await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "listing the store for the cache failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        {
            let mut reg = registry.write().unwrap_or_else(|e| e.into_inner());
            for kv in kvs.iter().filter(|kv| kv.key.starts_with(CRD_PREFIX)) {
                if let Ok(crd) = serde_json::from_slice::<Value>(&kv.value) {
                    reg.apply_crd(&crd);
                }
            }
        }
        services.reset(kvs.iter().map(|kv| (kv.key.as_str(), &kv.value[..])));
        authz.note_reset(rev);
        cache.reset(
            kvs.iter()
                .filter_map(|kv| Cached::from_stored(&kv.key, &kv.value, kv.mod_revision))
                .collect(),
            rev,
        );
        let _ = first_fill.send(true);
        let mut w = match store.watch("/registry/", rev).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "starting the cache watch failed; re-listing");
                continue;
            }
        };
        loop {
            let ev = match w.recv().await {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the cache's store watch ended; re-listing");
                    break;
                }
                Some(Ok(ev)) => ev,
            };
            let key = ev.kv.key.clone();
            authz.note_change(&key, ev.revision);
            if key.starts_with(CRD_PREFIX) {
                let mut reg = registry.write().unwrap_or_else(|e| e.into_inner());
                match ev.kind {
                    EventKind::Put => {
                        if let Ok(crd) = serde_json::from_slice::<Value>(&ev.kv.value) {
                            reg.apply_crd(&crd);
                        }
                    }
                    EventKind::Delete => {
                        reg.remove_crd(key.trim_start_matches(CRD_PREFIX).trim_start_matches("_/"))
                    }
                }
            }
            let new = match ev.kind {
                EventKind::Put => {
                    services.observe(&key, Some(&ev.kv.value[..]));
                    Cached::from_stored(&key, &ev.kv.value, ev.kv.mod_revision)
                }
                EventKind::Delete => {
                    services.observe(&key, None);
                    None
                }
            };
            cache.apply(ev.revision, &key, new);
        }
    }
}

async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: axum::Router,
    mut shutdown: watch::Receiver<bool>,
    store: Store,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let Ok((tcp, _peer)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            // One slow handshake cannot stall accepting: each runs in its own task.
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await;
        });
    }
    let _ = store.close().await;
}

/// Path of the admin kubeconfig of a data dir.
pub fn kubeconfig_path(data_dir: &Path) -> PathBuf {
    data_dir.join("kubeconfig")
}
