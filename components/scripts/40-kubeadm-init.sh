#!/usr/bin/env bash
# 40-kubeadm-init.sh: create the cluster on the control-plane node with kubeadm.
#
# Runs on: the control-plane node, as root, after 30-kube-packages.
# Inputs (environment):
#   KUBERNETES_VERSION  e.g. 1.34.2
#   IMAGE_REPOSITORY    e.g. registry.aliyuncs.com/google_containers or registry.k8s.io
#   API_SERVER_IP       public IP (an extra SAN of the API server certificate)
#   ADVERTISE_ADDRESS   private IP (API server address, controlPlaneEndpoint <it>:6443)
#   POD_CIDR            e.g. 10.244.0.0/16
#   NODE_NAME           the Kubernetes node name
#   CONTROL_PLANE_TAINT true: keep kubeadm's control-plane taint; false: no taints
#                       (a single/first GPU node that must also run GPU pods)
# Knobs: READY_TIMEOUT (seconds to wait for /readyz, default 300), POLL_SECONDS (default 5),
#   GPU_K8S_ROOT (path prefix, tests only).
# stdin: not read.
# stdout: nothing. kubeadm's output goes to stderr with the join token and CA hash
#   redacted (43-join-token creates the token workers use).
set -euo pipefail

readonly STEP="40-kubeadm-init"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly VERSION="${KUBERNETES_VERSION:-}"
readonly IMAGE_REPOSITORY="${IMAGE_REPOSITORY:-}"
readonly API_SERVER_IP="${API_SERVER_IP:-}"
readonly ADVERTISE_ADDRESS="${ADVERTISE_ADDRESS:-}"
readonly POD_CIDR="${POD_CIDR:-}"
readonly NODE_NAME="${NODE_NAME:-}"
readonly CONTROL_PLANE_TAINT="${CONTROL_PLANE_TAINT:-true}"
readonly READY_TIMEOUT="${READY_TIMEOUT:-300}"
readonly POLL_SECONDS="${POLL_SECONDS:-5}"
readonly CONTAINERD_CONFIG="$ROOT/etc/containerd/config.toml"
readonly ADMIN_CONF="$ROOT/etc/kubernetes/admin.conf"
readonly KUBEADM_CONFIG="$ROOT/etc/kubernetes/gpu-k8s-kubeadm.yaml"
readonly CRI_SOCKET=unix:///run/containerd/containerd.sock
readonly IPV4_RE='^([0-9]{1,3}\.){3}[0-9]{1,3}$'

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

redact() { sed -E 's/(--token|--discovery-token-ca-cert-hash|--certificate-key|Using token:)[[:space:]]+[^[:space:]]+/\1 <redacted>/g'; }

validate() {
  [[ "$VERSION" =~ ^1\.[0-9]+\.[0-9]+$ ]] || die "KUBERNETES_VERSION must look like 1.34.2 (got '$VERSION')"
  [[ "$IMAGE_REPOSITORY" =~ ^[a-z0-9][a-z0-9.:/_-]*$ ]] || die "IMAGE_REPOSITORY must be a registry path such as registry.k8s.io (got '$IMAGE_REPOSITORY')"
  [[ "$API_SERVER_IP" =~ $IPV4_RE ]] || die "API_SERVER_IP must be an IPv4 address (got '$API_SERVER_IP')"
  [[ "$ADVERTISE_ADDRESS" =~ $IPV4_RE ]] || die "ADVERTISE_ADDRESS must be an IPv4 address (got '$ADVERTISE_ADDRESS')"
  [[ "$POD_CIDR" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$ ]] || die "POD_CIDR must be an IPv4 CIDR such as 10.244.0.0/16 (got '$POD_CIDR')"
  [[ "$NODE_NAME" =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]] || die "NODE_NAME must be a DNS label (got '$NODE_NAME')"
  [[ "$CONTROL_PLANE_TAINT" == true || "$CONTROL_PLANE_TAINT" == false ]] || die "CONTROL_PLANE_TAINT must be true or false (got '$CONTROL_PLANE_TAINT')"
}

pull_images() {
  local try
  for try in 1 2 3; do
    kubeadm config images pull --image-repository "$IMAGE_REPOSITORY" --kubernetes-version "v$VERSION" \
      --cri-socket "$CRI_SOCKET" >&2 && return 0
    warn "pulling the control-plane images failed (try $try of 3)"
    sleep "$POLL_SECONDS"
  done
  die "cannot pull the control-plane images from $IMAGE_REPOSITORY: check the node's network or gpu-k8s:kubernetesMirror"
}

write_config() {
  local api=kubeadm.k8s.io/v1beta3 minor="${VERSION#1.}" taints=""
  if ((${minor%%.*} >= 31)); then api=kubeadm.k8s.io/v1beta4; fi
  [[ "$CONTROL_PLANE_TAINT" == false ]] && taints="  taints: []"
  mkdir -p "$(dirname "$KUBEADM_CONFIG")"
  cat >"$KUBEADM_CONFIG" <<YAML
apiVersion: $api
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: "$ADVERTISE_ADDRESS"
  bindPort: 6443
nodeRegistration:
  name: "$NODE_NAME"
  criSocket: "$CRI_SOCKET"
$taints
---
apiVersion: $api
kind: ClusterConfiguration
kubernetesVersion: "v$VERSION"
imageRepository: "$IMAGE_REPOSITORY"
controlPlaneEndpoint: "$ADVERTISE_ADDRESS:6443"
networking:
  podSubnet: "$POD_CIDR"
apiServer:
  certSANs:
    - "$API_SERVER_IP"
    - "$ADVERTISE_ADDRESS"
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
YAML
}

init_cluster() {
  if [[ -f "$ADMIN_CONF" ]]; then
    log "cluster already initialised (/etc/kubernetes/admin.conf exists), skipping kubeadm init"
    return 0
  fi
  pull_images
  write_config
  log "kubeadm init (a few minutes)"
  if ! kubeadm init --config "$KUBEADM_CONFIG" 2>&1 | redact >&2; then
    # Undo the half-done init so that the next `pulumi up` starts from a clean node.
    kubeadm reset -f >&2 || warn "kubeadm reset -f failed too: run it on the node by hand"
    die "kubeadm init failed: see its output above; the node was reset, so run pulumi up again once the cause is fixed"
  fi
}

wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT)) out=""
  until out=$(timeout 10 kubectl --kubeconfig "$ADMIN_CONF" get --raw=/readyz 2>&1) && [[ "$out" == ok ]]; do
    ((SECONDS < deadline)) ||
      die "the API server is not ready after ${READY_TIMEOUT}s (${out:0:200}): check 'crictl ps -a' and 'journalctl -u kubelet'; after a half-done init run 'kubeadm reset -f' and retry"
    sleep "$POLL_SECONDS"
  done
  log "API server is ready"
}

main() {
  track_time
  validate
  align_sandbox_image "$IMAGE_REPOSITORY" "$VERSION" "$CONTAINERD_CONFIG"
  init_cluster
  wait_ready
}

main "$@"
