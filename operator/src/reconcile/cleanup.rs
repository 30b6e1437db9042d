//! The finalizer: drain every pod, then remove every child (the generated admin-key Secret too;
//! generated client Secrets stay, Mattermost holds their values), then let the RtcdCluster go.

use k8s_openapi::api::{
    core::v1::{Pod, Secret, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};
use serde_json::json;

use super::{
    BUSY,
    children::{delete_owned, delete_pod, service_monitor_api},
    observe::write_kept_status,
    problem,
};
use crate::{
    Result,
    controller::Context,
    crd::RtcdCluster,
    resources::{self, ANN_NODE, FINALIZER, LABEL_CLUSTER},
    status::{Summary, reasons},
};

/// One step of the cluster's removal.
pub(super) async fn cleanup(cr: &RtcdCluster, ctx: &Context, ns: &str) -> Result<Action> {
    if !cr.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    // The canary leaves first: the instances drain, new calls would only hold them up.
    super::canary::set_targets(ctx, cr, Vec::new());
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("{LABEL_CLUSTER}={}", cr.name_any());
    let pods = pods_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    if !pods.is_empty() {
        for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            delete_pod(&pods_api, &p.name_any(), &DeleteParams::default()).await?;
            ctx.event(
                cr,
                EventType::Normal,
                "PodDraining",
                "DeletePod",
                &format!("draining {} (cluster deleted)", p.name_any()),
            )
            .await;
        }
        let prev = cr.status.clone().unwrap_or_default();
        let summary = Summary {
            deleting: true,
            progress: pods
                .iter()
                .map(|p| {
                    problem(
                        reasons::DRAINING,
                        &p.annotations().get(ANN_NODE).cloned().unwrap_or_default(),
                        format!("{} is draining", p.name_any()),
                    )
                })
                .collect(),
            ..Summary::default()
        };
        write_kept_status(cr, ctx, &prev, summary, prev.credentials_secret.clone()).await?;
        return Ok(Action::requeue(BUSY));
    }
    let svcs: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    for s in svcs.list(&ListParams::default().labels(&selector)).await?.items {
        delete_owned(&svcs, cr, &s.name_any()).await?;
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), ns);
    delete_owned(&pdbs, cr, &cr.name_any()).await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    delete_owned(&secrets, cr, &resources::credentials_secret_name(cr)).await?;
    if let Some(api) = service_monitor_api(ctx, ns).await {
        delete_owned(&api, cr, &cr.name_any()).await?;
    }
    let rest: Vec<&String> = cr.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let crs: Api<RtcdCluster> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": cr.resource_version()}});
    crs.patch(&cr.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.event(
        cr,
        EventType::Normal,
        "Deleted",
        "Finalize",
        "every instance drained and every child removed",
    )
    .await;
    Ok(Action::await_change())
}
