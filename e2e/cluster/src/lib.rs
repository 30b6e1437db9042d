//! rtcd-e2e: the cluster-agnostic end-to-end suite lives in `tests/cluster.rs`; it needs only a
//! `KUBECONFIG` (kind via e2e/kind/run.sh, or the local control plane via
//! scripts/cluster-e2e.sh). This library is empty.
