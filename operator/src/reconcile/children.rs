//! Phase 3, the cluster's children other than pods: the API and hosts Services, the media
//! Services (LoadBalancer mode), the PodDisruptionBudget and the ServiceMonitor. Each is applied
//! only when its content hash differs from the one its live copy carries (from the watch cache,
//! or one read), so a steady cluster causes no writes. Also the delete helpers.

use std::fmt::Debug;

use k8s_openapi::api::{
    core::v1::{Pod, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams},
    runtime::reflector::ObjectRef,
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    Error, Result,
    controller::Context,
    crd::RtcdCluster,
    resources::{self, ANN_NODE, FIELD_MANAGER, services},
};

/// The content hash a child was last applied with.
pub(super) const ANN_APPLIED: &str = "rtcd-rs.dev/applied-hash";

/// Applies `want` (server-side, the one field manager) unless `have`, its live copy, already
/// carries `want`'s content hash. Returns whether it wrote.
pub(super) async fn apply_if_changed<K>(api: &Api<K>, have: Option<&K>, want: &K) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let hash = resources::short_hash(&serde_json::to_vec(want)?);
    if have.is_some_and(|h| {
        h.meta().deletion_timestamp.is_none() && h.annotations().get(ANN_APPLIED) == Some(&hash)
    }) {
        return Ok(false);
    }
    let mut want = want.clone();
    want.annotations_mut().insert(ANN_APPLIED.into(), hash);
    apply(api, &want).await?;
    Ok(true)
}

/// Server-side apply with the one field manager.
pub(super) async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(Error::Invalid("object without a name".into()))?;
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?)
}

/// Deletes pod `name`; gone already is fine.
pub(super) async fn delete_pod(api: &Api<Pod>, name: &str, dp: &DeleteParams) -> Result<()> {
    match api.delete(name, dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes `name` if it exists and `cr` owns it.
pub(super) async fn delete_owned<K>(api: &Api<K>, cr: &RtcdCluster, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let Some(obj) = api.get_opt(name).await? else {
        return Ok(());
    };
    let ours = obj
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == cr.metadata.uid.as_ref());
    if ours {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The cached Service `ns/name`.
fn cached_service(ctx: &Context, ns: &str, name: &str) -> Option<std::sync::Arc<Service>> {
    ctx.stores.services.get(&ObjectRef::new(name).within(ns))
}

/// The API and hosts Services, the media Services in `media` (others of this cluster's are
/// removed), the PodDisruptionBudget and the ServiceMonitor.
/// `instances`: the nodes that run (or keep) an rtcd pod, for the budget.
pub(super) async fn reconcile(
    cr: &RtcdCluster,
    ctx: &Context,
    ns: &str,
    media: &[Service],
    instances: usize,
) -> Result<()> {
    let svcs: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    for want in [services::api_service(cr), services::hosts_service(cr)]
        .iter()
        .chain(media)
    {
        let have = cached_service(ctx, ns, &want.name_any());
        apply_if_changed(&svcs, have.as_deref(), want).await?;
    }
    // Media Services of nodes that no longer run rtcd.
    let cluster = cr.name_any();
    for svc in ctx.stores.services.state() {
        let mine = svc.namespace().as_deref() == Some(ns)
            && svc.labels().get(resources::LABEL_CLUSTER) == Some(&cluster)
            && svc.annotations().contains_key(ANN_NODE);
        if mine && !media.iter().any(|m| m.name_any() == svc.name_any()) {
            delete_owned(&svcs, cr, &svc.name_any()).await?;
        }
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), ns);
    if cr.spec.pod_disruption_budget.enabled {
        let have = pdbs.get_opt(&cluster).await?;
        apply_if_changed(&pdbs, have.as_ref(), &resources::pdb(cr, instances)).await?;
    } else {
        delete_owned(&pdbs, cr, &cluster).await?;
    }
    if let Some(api) = service_monitor_api(ctx, ns).await {
        if cr.spec.service_monitor.enabled {
            let want: DynamicObject = serde_json::from_value(resources::service_monitor(cr))?;
            let have = api.get_opt(&cluster).await?;
            apply_if_changed(&api, have.as_ref(), &want).await?;
        } else {
            delete_owned(&api, cr, &cluster).await?;
        }
    }
    Ok(())
}

/// The ServiceMonitor API in `ns`, when its CRD exists (discovery, cached by the context).
pub(super) async fn service_monitor_api(ctx: &Context, ns: &str) -> Option<Api<DynamicObject>> {
    let ar = ctx.service_monitor_resource().await?;
    Some(Api::namespaced_with(ctx.client.clone(), ns, &ar))
}
