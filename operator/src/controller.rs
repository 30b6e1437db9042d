//! The controller: watches RtcdClusters, their pods and Services, and Nodes (a node change
//! requeues every cluster), and holds the shared [`Context`].

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};

use crate::{Error, crd::RtcdCluster, health, metrics::Metrics, reconcile};

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// rtcd health answers.
    pub health: health::Cache,
    /// Images the privileged sysctl init container may run (`--sysctl-images`).
    pub sysctl_images: Vec<String>,
}

impl Context {
    /// Publishes an Event on `cr`; a failure is only logged.
    pub async fn event(&self, cr: &RtcdCluster, type_: EventType, reason: &str, action: &str, note: &str) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &cr.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "cannot publish event");
        }
    }
}

/// Runs the controller until `shutdown` resolves.
/// `client` serves requests (bounded by timeouts), `watch_client` the watches.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: Client,
    watch_client: Client,
    metrics: Arc<Metrics>,
    sysctl_images: Vec<String>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (crs, pods, svcs): (Api<RtcdCluster>, Api<Pod>, Api<Service>) = match &namespace {
        Some(ns) => (
            Api::namespaced(watch_client.clone(), ns),
            Api::namespaced(watch_client.clone(), ns),
            Api::namespaced(watch_client.clone(), ns),
        ),
        None => (
            Api::all(watch_client.clone()),
            Api::all(watch_client.clone()),
            Api::all(watch_client.clone()),
        ),
    };
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=rtcd-operator");
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "rtcd-operator".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        metrics,
        health: health::Cache::default(),
        sysctl_images,
    });
    let controller = Controller::new(crs, watcher::Config::default());
    let store = controller.store();
    controller
        .owns(pods, owned.clone())
        .owns(svcs, owned)
        .watches(
            Api::<Node>::all(watch_client),
            watcher::Config::default(),
            move |_node: Node| {
                // Any node change may add, remove or move an instance of any cluster.
                store
                    .state()
                    .into_iter()
                    .map(|cr| ObjectRef::from_obj(&*cr))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(cluster = %obj.name, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

fn error_policy(cr: Arc<RtcdCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %cr.name_any(), error = %err, "reconcile error");
    ctx.metrics.failure(err.metric_label());
    Action::requeue(Duration::from_secs(5))
}
