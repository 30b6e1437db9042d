#!/usr/bin/env bash
# Start a real node and join it to a running envtest control plane: containerd (our config, runc,
# CNI bridge + host-local + portmap from Debian), kubelet and kube-proxy built from the pinned
# k8s.io/kubernetes, images imported from scripts/build-images.sh's tars, and cluster DNS (CoreDNS,
# hostNetwork, behind Service kube-system/kube-dns 10.0.0.10).
#
#   e2e/node/up.sh NODE_RUN NODE_NAME NODE_IP IMAGES_DIR       (last stdout line: NODE_RUN)
#
# Run as root inside the caller's own network AND mount namespaces (unshare -m -n), after
# e2e/envtest/up.sh with ENVTEST_ADVERTISE_IP=NODE_IP (KUBECONFIG and ENVTEST_RUN set from its env
# file). NODE_IP must be an address of that network namespace. Everything lives under NODE_RUN;
# PIDs go to NODE_RUN/pids, pod cgroups under /<cgroupRoot>=/rtcd-node-<id> in every hierarchy.
# On failure, down.sh undoes what was done. e2e/node/down.sh NODE_RUN stops and removes it all.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
NR=${1:?usage: up.sh NODE_RUN NODE_NAME NODE_IP IMAGES_DIR}
NODE_NAME=${2:?}
NODE_IP=${3:?}
IMAGES=${4:?}
: "${KUBECONFIG:?source the envtest env file first}" "${ENVTEST_RUN:?}"
mkdir -p "$NR/logs"
NR=$(cd "$NR" && pwd)
log() { echo "node: $*" >&2; }
T0=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - T0) / 1000000 ))ms"; }
[ ! -s "$NR/pids" ] || { log "$NR/pids exists: a node is already running there"; exit 1; }
: >"$NR/pids"
NODE_BIN=${NODE_BIN:-$("$HERE/build.sh" | tail -n1)}
echo "$NODE_BIN" >"$NR/node-bin"
for b in kubelet kube-proxy crictl; do [ -x "$NODE_BIN/$b" ] || { log "missing $NODE_BIN/$b"; exit 1; }; done
for b in containerd containerd-shim-runc-v2 runc iptables; do
  command -v "$b" >/dev/null || { log "$b not installed (scripts/deps.sh node)"; exit 1; }
done
[ -x /usr/lib/cni/bridge ] || { log "/usr/lib/cni/bridge missing (containernetworking-plugins)"; exit 1; }
ip -o addr show | grep -qw "inet $NODE_IP" || { log "$NODE_IP is not an address of this network namespace"; exit 1; }

fail() {
  log "FAILED: $*"
  local f; for f in "$NR"/logs/*.log "$NR"/pod-logs/*/*/*.log; do [ -f "$f" ] && { echo "--- tail $f" >&2; tail -n 20 "$f" >&2; }; done
  "$HERE/down.sh" "$NR" >&2 || true
  exit 1
}
trap 'fail "line $LINENO: $BASH_COMMAND"' ERR
start() { # name cmd...
  local name=$1; shift
  "$@" </dev/null >"$NR/logs/$name.log" 2>&1 &
  echo "$! $name" >>"$NR/pids"
}
alive() { local pid; pid=$(awk -v n="$1" '$2==n{print $1}' "$NR/pids"); kill -0 "$pid" 2>/dev/null; }
wait_for() { # what proc secs cmd...
  local what=$1 proc=$2 secs=$3 i; shift 3
  for ((i = 0; i < secs * 5; i++)); do
    if "$@" >/dev/null 2>&1; then log "$what after $(elapsed)"; return 0; fi
    [ "$proc" = - ] || alive "$proc" || fail "$proc exited while waiting for $what"
    sleep 0.2
  done
  fail "timed out after ${secs}s waiting for $what"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A unique cgroup root, recorded before anything can create it, so down.sh always finds it.
CG_ROOT=/rtcd-node-$(basename "$NR" | tr -c 'a-zA-Z0-9\n' -)-$$
echo "$CG_ROOT" >"$NR/cgroup-root"
# kubelet wants its cgroupRoot to exist in every hierarchy (cpuset: with the parent's cpus/mems).
for h in /sys/fs/cgroup/*/; do
  [ -e "${h}cgroup.procs" ] || continue
  mkdir -p "$h${CG_ROOT#/}"
  if [ -e "${h}cpuset.cpus" ]; then
    cat "${h}cpuset.cpus" >"$h${CG_ROOT#/}/cpuset.cpus"; cat "${h}cpuset.mems" >"$h${CG_ROOT#/}/cpuset.mems"
  fi
done
# Pod network namespaces, shim state and CNI results stay private to this mount namespace.
mount -t tmpfs -o mode=0755 tmpfs /run 2>/dev/null || fail "mount tmpfs /run (run me under unshare -m)"
mkdir -p /run/netns /var/lib/cni
mount -t tmpfs tmpfs /var/lib/cni
# Services (10.0.0.0/24) need a route for the node's own traffic to reach kube-proxy's DNAT.
NODE_DEV=$(ip -o addr show | awk -v ip="$NODE_IP" '$3 == "inet" && $4 ~ "^" ip "/" {print $2; exit}')
ip route replace 10.0.0.0/24 dev "$NODE_DEV" src "$NODE_IP"
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.ipv4.conf.all.route_localnet=1 2>/dev/null \
  || sysctl -qw net.ipv4.ip_forward=1

# --- containerd ------------------------------------------------------------------------------------------
. "$IMAGES/images.env"
SOCK=$NR/containerd/containerd.sock
mkdir -p "$NR/containerd" "$NR/cni/net.d" "$NR/cni/ipam"
cat >"$NR/containerd/config.toml" <<EOF
version = 2
root = "$NR/containerd/root"
state = "$NR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause"
  # Required here: the sandbox has no CAP_SYS_RESOURCE, so runc may not lower oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NR/cni/net.d"
EOF
cat >"$NR/cni/net.d/10-rtcd-node.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "rtcd-node", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$NR/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 10\n' "$SOCK" "$SOCK" >"$NR/crictl.yaml"
start containerd containerd --config "$NR/containerd/config.toml"
wait_for "containerd" containerd 30 "$NODE_BIN/crictl" --config "$NR/crictl.yaml" version
CTR=(ctr --address "$SOCK" --namespace k8s.io)
# --digests --base-name: also name each image <repository>@<digest>, as a pull would; the CRI
# finds digest-pinned references (the sysctl init image) only by that name.
for t in "$IMAGES"/*.tar; do
  var=$(basename "$t" .tar); var=${var//-/_}; ref=${!var:?"$t is not in images.env"}
  "${CTR[@]}" images import --digests --base-name "${ref%:*}" "$t" >/dev/null
done
log "imported $(ls "$IMAGES"/*.tar | wc -l) images after $(elapsed)"

# --- kubelet -----------------------------------------------------------------------------------------------
mkdir -p "$NR/kubelet/root" "$NR/kubelet/pki"
echo "nameserver 127.0.0.1" >"$NR/resolv.conf"   # upstream of dnsPolicy Default pods: nothing outside
HZ_KUBELET=$(free_port)
cat >"$NR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $CG_ROOT
containerRuntimeEndpoint: unix://$SOCK
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $HZ_KUBELET
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [10.0.0.10]
resolvConf: $NR/resolv.conf
failSwapOn: false
protectKernelDefaults: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
maxPods: 40
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
volumePluginDir: $NR/kubelet/volume-plugins
podLogsDir: $NR/pod-logs
EOF
start kubelet "$NODE_BIN/kubelet" --config="$NR/kubelet/config.yaml" --kubeconfig="$KUBECONFIG" \
  --root-dir="$NR/kubelet/root" --cert-dir="$NR/kubelet/pki" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
  --node-labels=rtcd-rs.dev/test-node=real --v=1
wait_for "kubelet /healthz" kubelet 60 curl -sf --max-time 2 "http://127.0.0.1:$HZ_KUBELET/healthz"

# --- kube-proxy (iptables) -----------------------------------------------------------------------------------
HZ_PROXY=$(free_port); M_PROXY=$(free_port)
cat >"$NR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$KUBECONFIG"}
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: 10.244.0.0/16
healthzBindAddress: 127.0.0.1:$HZ_PROXY
metricsBindAddress: 127.0.0.1:$M_PROXY
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
start kube-proxy "$NODE_BIN/kube-proxy" --config="$NR/kube-proxy.yaml" --v=1
wait_for "kube-proxy /healthz" kube-proxy 60 curl -sf --max-time 2 "http://127.0.0.1:$HZ_PROXY/healthz"

wait_for "node $NODE_NAME Ready" kubelet 90 \
  sh -c "kubectl get node '$NODE_NAME' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"

# --- cluster DNS ---------------------------------------------------------------------------------------------
# hostNetwork: the answer to a pod on the bridge then returns through the node's stack (un-DNAT).
# Port 1053: the container runs as nonroot without NET_BIND_SERVICE; the Service maps 53 to it.
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
  - apiGroups: [""]
    resources: [services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:1053 {
        errors
        health $NODE_IP:18080
        ready $NODE_IP:18181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        cache 5
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      hostNetwork: true
      dnsPolicy: Default
      containers:
        - name: coredns
          image: $coredns
          imagePullPolicy: Never
          args: ["-conf", "/etc/coredns/Corefile"]
          ports:
            - {name: dns, containerPort: 1053, protocol: UDP}
            - {name: dns-tcp, containerPort: 1053, protocol: TCP}
          readinessProbe: {httpGet: {host: $NODE_IP, path: /ready, port: 18181}, periodSeconds: 2}
          livenessProbe: {httpGet: {host: $NODE_IP, path: /health, port: 18080}, periodSeconds: 10}
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
          volumeMounts: [{name: config, mountPath: /etc/coredns}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: 10.0.0.10
  selector: {k8s-app: kube-dns}
  ports:
    - {name: dns, port: 53, targetPort: 1053, protocol: UDP}
    - {name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}
EOF
wait_for "cluster DNS ready" kubelet 90 \
  sh -c "kubectl -n kube-system get endpointslices -l kubernetes.io/service-name=kube-dns -o jsonpath='{.items[*].endpoints[*].conditions.ready}' | grep -qw true"
trap - ERR
log "up in $(elapsed): node $NODE_NAME ($NODE_IP), containerd $SOCK, logs in $NR/logs"
echo "$NR"
