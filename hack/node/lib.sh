# shellcheck shell=bash
# Shared settings of the real one-node cluster (hack/node/*). Sourced, not executed.
HACK_NODE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_NODE/../.." && pwd)"
source "$HACK_NODE/../cluster/versions.env"
export MODELSHIP_CACHE="${MODELSHIP_CACHE:-/var/cache/modelship}"
NODE_CLUSTER="${MODELSHIP_NODE_CLUSTER:-modelship-node}"     # kwokctl control plane name
NODE_NAME="${MODELSHIP_NODE_NAME:-modelship-node-0}"         # the real Node object
NODE_CACHE="$MODELSHIP_CACHE/node"
NODE_BIN="$NODE_CACHE/k8s-v${K8S_VERSION}/bin"                # kubelet (hack/node/build-kubelet)
ADDONS_BIN="$NODE_CACHE/addons-coredns-v${COREDNS_VERSION}_metrics-server-v${METRICS_SERVER_VERSION}/bin"  # hack/node/build-addons
CP_BIN="$MODELSHIP_CACHE/k8s/k8s-v${K8S_VERSION}_etcd-v${ETCD_VERSION}_kwok-v${KWOK_VERSION}/bin"
NODE_DATA="$NODE_CACHE/containerd-root"    # containerd content store: kept between runs (warm image imports)
NODE_RUN="/run/modelship-node"             # sockets, containerd state, pids, configs: removed by down
NODE_KUBELET_ROOT="$NODE_CACHE/kubelet"    # kubelet --root-dir: removed by down
NODE_LOGS="$NODE_CACHE/logs"
# Private addresses, only on a bridge this run creates: node IP = bridge gateway, pods behind it.
NODE_BRIDGE="msnode0"
NODE_IP="10.213.0.1"
POD_SUBNET="10.213.0.0/24"
REGISTRY="$NODE_IP:5000"
SERVICE_CIDR="10.96.0.0/16"                # modelship_dev.cluster's service-cluster-ip-range: routed into our bridge
DNS_IP="10.96.0.10"                        # the kube-dns Service (CoreDNS, hack/node/addons); kubelet clusterDNS
CLUSTER_DOMAIN="cluster.local"
# Pod to pod on the bridge, directly or through a Service (kube-proxy DNATs on the host, the packet goes back out
# on the bridge): br_netfilter sends it through the FORWARD chain, whose policy is DROP where docker runs. Accept
# what stays on our bridge, nothing else (pods get no way out). Added by up, deleted by down.
FORWARD_RULE=(FORWARD -i "$NODE_BRIDGE" -o "$NODE_BRIDGE" -m comment --comment "modelship-node: pod to pod on $NODE_BRIDGE" -j ACCEPT)
# Host directories the kubelet, containerd, its shims and CNI make on first use whatever their config says (the
# kubelet's device-plugin socket, network namespaces, shim sockets, libcni's result cache): up lists those missing
# before (dirs.absent); down removes what the node put in them and then them, once empty. Parents first.
NODE_HOST_DIRS=(/run/netns /run/containerd /run/containerd/s /var/lib/cni /var/lib/cni/results
                /var/lib/kubelet /var/lib/kubelet/device-plugins)
KUBECONFIG_NODE="$MODELSHIP_CACHE/kubeconfig-$NODE_CLUSTER"
CTR=(ctr --address "$NODE_RUN/containerd.sock" -n k8s.io)
PAUSE_IMAGE="docker.io/modelship/pause:3.10"
NODE_IMAGES=(modelship/serving:0.1.0 modelship/optimizer:0.1.0 modelship/operator:0.1.0)
NODE_OPTIONAL_IMAGES=(modelship/buildkit:0.1.0)   # imported when docker has them (hack/node/buildkit-image)
COREDNS_IMAGE="docker.io/modelship/coredns:$COREDNS_VERSION"                  # one-file images of the add-ons
METRICS_SERVER_IMAGE="docker.io/modelship/metrics-server:$METRICS_SERVER_VERSION"
SYSCTLS=(net.ipv4.ip_forward net.ipv4.conf.all.route_localnet vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
nlog() { printf '[node %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
ndie() { nlog "ERROR: $*"; exit 1; }
kc() { "$CP_BIN/kubectl" --kubeconfig="$KUBECONFIG_NODE" "$@"; }
