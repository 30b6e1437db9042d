//! Phase 2, Secrets: the generated admin-key and client Secrets (created once, never
//! rewritten), then every referenced Secret read once, each missing Secret or key (or a client ID
//! or auth key rtcd would refuse) named by its field, and the configured clients' values hashed
//! into the pods' spec hash (rtcd reads them once, at start, so a rotation must roll the pods).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, runtime::events::EventType};

use super::problem_list;
use crate::{
    Error, Result,
    controller::Context,
    crd::{ClientSecret, DEFAULT_GENERATED_CLIENT_ID, RtcdCluster, SecretKeyRef},
    resources::{self, CREDENTIALS_KEY},
    validate,
};

/// What the pods need from the Secrets.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    /// The admin key's Secret and key.
    pub credentials: SecretKeyRef,
    /// The admin key itself (for the drain API).
    pub admin_key: String,
    /// A digest of the configured clients' values ("" without clients).
    pub clients_hash: String,
}

/// Resolves the Secrets of `cr` in `ns`: `Ok(Err(detail))` when one is missing or unusable.
pub(super) async fn resolve(
    cr: &RtcdCluster,
    ctx: &Context,
    ns: &str,
) -> Result<std::result::Result<Resolved, String>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    // Each Secret is read once, however many of its keys are referenced (a client's two), and
    // those the operator generates are not read again after their check.
    let mut fetched: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    let credentials = match &cr.spec.credentials {
        Some(r) => r.clone(),
        None => {
            let (r, s) = ensure_generated_credentials(cr, ctx, &secrets).await?;
            fetched.insert(r.name.clone(), Some(s));
            r
        }
    };
    for c in cr.spec.clients.iter().filter(|c| c.generate) {
        let s = ensure_generated_client(cr, ctx, &secrets, c).await?;
        fetched.insert(c.secret_name.clone(), Some(s));
    }
    let mut refs: Vec<(String, SecretKeyRef)> = vec![("spec.credentials".into(), credentials.clone())];
    if let Some(r) = &cr.spec.config.rtc.turn_static_auth_secret {
        refs.push(("spec.config.rtc.turnStaticAuthSecret".into(), r.clone()));
    }
    for (i, s) in cr.spec.config.rtc.ice_servers.iter().enumerate() {
        if let Some(r) = &s.credential {
            refs.push((format!("spec.config.rtc.iceServers[{i}].credential"), r.clone()));
        }
    }
    for (i, c) in cr.spec.clients.iter().enumerate() {
        for (field, key) in [("clientIdKey", &c.client_id_key), ("authKeyKey", &c.auth_key_key)] {
            refs.push((
                format!("spec.clients[{i}].{field}"),
                SecretKeyRef {
                    name: c.secret_name.clone(),
                    key: key.clone(),
                },
            ));
        }
    }
    let mut missing = Vec::new();
    let mut clients_digest = Vec::new();
    for (field, r) in &refs {
        if !fetched.contains_key(&r.name) {
            fetched.insert(r.name.clone(), secrets.get_opt(&r.name).await?);
        }
        match fetched.get(&r.name).and_then(Option::as_ref) {
            None => missing.push(format!("{field}: Secret {ns}/{} not found", r.name)),
            Some(s) if !has_key(s, &r.key) => {
                missing.push(format!("{field}: Secret {ns}/{} has no key {:?}", r.name, r.key))
            }
            Some(s) => {
                if field.starts_with("spec.clients[") {
                    // What rtcd would refuse at start is reported here, before a pod crash-loops.
                    let value = secret_value(s, &r.key);
                    let why = if field.ends_with(".authKeyKey") {
                        validate::auth_key_problem(value.len())
                    } else {
                        validate::client_id_problem(&String::from_utf8_lossy(&value))
                    };
                    if let Some(why) = why {
                        missing.push(format!("{field}: Secret {ns}/{} key {:?}: {why}", r.name, r.key));
                    }
                    clients_digest.extend_from_slice(field.as_bytes());
                    clients_digest.extend_from_slice(&value);
                }
            }
        }
    }
    if !missing.is_empty() {
        return Ok(Err(problem_list(&missing)));
    }
    let admin_key = fetched
        .get(&credentials.name)
        .and_then(Option::as_ref)
        .map(|s| String::from_utf8_lossy(&secret_value(s, &credentials.key)).to_string())
        .unwrap_or_default();
    Ok(Ok(Resolved {
        credentials,
        admin_key,
        clients_hash: if clients_digest.is_empty() {
            String::new()
        } else {
            resources::short_hash(&clients_digest)
        },
    }))
}

/// A Secret's value for `key` (from `data`, or `stringData` before the API server merged it).
fn secret_value(s: &Secret, key: &str) -> Vec<u8> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.clone())
        .or_else(|| {
            s.string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| v.clone().into_bytes())
        })
        .unwrap_or_default()
}

fn has_key(s: &Secret, key: &str) -> bool {
    s.data.as_ref().is_some_and(|d| d.contains_key(key))
        || s.string_data.as_ref().is_some_and(|d| d.contains_key(key))
}

/// The generated admin-key Secret: created once with 32 random bytes, never rewritten.
async fn ensure_generated_credentials(
    cr: &RtcdCluster,
    ctx: &Context,
    secrets: &Api<Secret>,
) -> Result<(SecretKeyRef, Secret)> {
    let name = resources::credentials_secret_name(cr);
    let key_ref = SecretKeyRef {
        name: name.clone(),
        key: CREDENTIALS_KEY.into(),
    };
    if let Some(s) = secrets.get_opt(&name).await? {
        return Ok((key_ref, s));
    }
    let key = random_key()?;
    let created = secrets
        .create(
            &kube::api::PostParams::default(),
            &resources::credentials_secret(cr, &key),
        )
        .await?;
    ctx.event(
        cr,
        EventType::Normal,
        "CredentialsGenerated",
        "CreateSecret",
        &format!("generated admin key in Secret {name}"),
    )
    .await;
    Ok((key_ref, created))
}

/// A client Secret the operator generates (`spec.clients[n].generate`): created once when absent,
/// never rewritten, so the values Mattermost was given stay valid.
async fn ensure_generated_client(
    cr: &RtcdCluster,
    ctx: &Context,
    secrets: &Api<Secret>,
    client: &ClientSecret,
) -> Result<Secret> {
    if let Some(s) = secrets.get_opt(&client.secret_name).await? {
        return Ok(s);
    }
    let key = random_key()?;
    let created = match secrets
        .create(
            &kube::api::PostParams::default(),
            &resources::client_secret(cr, client, &key),
        )
        .await
    {
        Ok(s) => s,
        // Created meanwhile (by a user or a previous leader): theirs stands.
        Err(kube::Error::Api(s)) if s.code == 409 => return Ok(secrets.get(&client.secret_name).await?),
        Err(e) => return Err(e.into()),
    };
    ctx.event(
        cr,
        EventType::Normal,
        "ClientGenerated",
        "CreateSecret",
        &format!(
            "generated the client {:?} in Secret {}",
            client.client_id.as_deref().unwrap_or(DEFAULT_GENERATED_CLIENT_ID),
            client.secret_name
        ),
    )
    .await;
    Ok(created)
}

/// 32 random bytes, base64url without padding (43 characters).
fn random_key() -> Result<String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| Error::Invalid(format!("no randomness: {e}")))?;
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}
