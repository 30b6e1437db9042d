//! rtcd-operator: reconciles `RtcdCluster` (`rtcd-rs.dev/v1alpha1`) into one hostNetwork rtcd
//! pod per eligible node, each advertising its own node's address.
//!
//! Dependency rule: `controller → reconcile → resources (pure) / plan (pure) / status (pure) /
//! validate (pure) / health / probe`. Only `controller`, `reconcile` and `leader` hold a `kube::Client`.

pub mod admin;
pub mod controller;
pub mod crd;
pub mod disruption;
pub mod dns;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod probe;
pub mod reconcile;
pub mod resources;
pub mod run;
pub mod status;
pub mod validate;

/// Errors of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be (de)serialised.
    #[error("serialisation: {0}")]
    Json(#[from] serde_json::Error),
    /// Something the operator cannot work with.
    #[error("{0}")]
    Invalid(String),
    /// The leader lease was lost: another replica took it, or it was not renewed in time.
    #[error("lost the leader lease {0}")]
    LostLease(String),
}

impl Error {
    /// A bounded label for the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Self::Kube(kube::Error::Api(s)) if s.code == 403 => "forbidden",
            Self::Kube(kube::Error::Api(s)) if s.code == 422 => "invalid",
            Self::Kube(kube::Error::Api(_)) => "api",
            Self::Kube(_) => "transport",
            Self::Json(_) => "serialisation",
            Self::Invalid(_) => "invalid",
            Self::LostLease(_) => "lost_lease",
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
