#!/usr/bin/env bash
# 50-kubeadm-join.sh: join a worker to the cluster, pinning the CA by its public-key hash.
#
# Runs on: every worker node, as root, after 30-kube-packages (and 43-join-token on the
# control plane).
# Inputs (environment):
#   CONTROL_PLANE_ENDPOINT  private-ip:6443 of the control plane
#   NODE_NAME               the Kubernetes node name
#   KUBERNETES_VERSION      e.g. 1.34.2 (for the pause image and the config apiVersion)
#   IMAGE_REPOSITORY        e.g. registry.aliyuncs.com/google_containers
# Knobs: GPU_K8S_ROOT (path prefix, tests only).
# stdin: line 1 the bootstrap token [a-z0-9]{6}.[a-z0-9]{16}; line 2 the CA hash
#   sha256:<64 hex>. Secrets: never printed; written only to a 0600 file under /run that
#   is removed on exit. CA verification is never skipped.
# stdout: nothing.
#
# A node already joined is left alone when it trusts the same cluster CA (the hash on stdin).
# When its CA differs, the control plane was rebuilt (its instance replaced: a new kubeadm
# init, a new CA): the node leaves the old cluster (kubeadm reset, the old pod network's
# config, state and interfaces removed) and joins the new one.
set -euo pipefail

readonly STEP="50-kubeadm-join"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly ENDPOINT="${CONTROL_PLANE_ENDPOINT:-}"
readonly NODE_NAME="${NODE_NAME:-}"
readonly VERSION="${KUBERNETES_VERSION:-}"
readonly IMAGE_REPOSITORY="${IMAGE_REPOSITORY:-}"
readonly CONTAINERD_CONFIG="$ROOT/etc/containerd/config.toml"
readonly KUBELET_CONF="$ROOT/etc/kubernetes/kubelet.conf"
readonly NODE_CA="$ROOT/etc/kubernetes/pki/ca.crt"
# What kubeadm reset leaves of the old cluster's pod network (its own output says so): the CNI
# config and state, flannel's lease (/run/flannel/subnet.env: a pod wired from it before flanneld
# writes the new one would give cni0 the old subnet), and flannel's interfaces, whose addresses
# the new cluster may not give.
readonly CNI_DIRS=("$ROOT/etc/cni/net.d" "$ROOT/var/lib/cni" "$ROOT/run/flannel")
readonly CNI_LINKS=(cni0 flannel.1)
readonly RUN_DIR="$ROOT/run/gpu-k8s"
readonly CRI_SOCKET=unix:///run/containerd/containerd.sock
TOKEN="" CA_HASH="" JOIN_CONFIG=""

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

cleanup() { if [[ -n "$JOIN_CONFIG" ]]; then rm -f "$JOIN_CONFIG"; fi; }

read_secrets() {
  if [[ ! -t 0 ]]; then
    IFS= read -r TOKEN || true
    IFS= read -r CA_HASH || true
  fi
  TOKEN="${TOKEN%$'\r'}" CA_HASH="${CA_HASH%$'\r'}"
  [[ "$TOKEN" =~ ^[a-z0-9]{6}\.[a-z0-9]{16}$ ]] ||
    die "the bootstrap token on stdin line 1 is malformed (not shown): expected [a-z0-9]{6}.[a-z0-9]{16}"
  [[ "$CA_HASH" =~ ^sha256:[0-9a-f]{64}$ ]] ||
    die "the CA hash on stdin line 2 is malformed (not shown): expected sha256:<64 hex digits> (42-ca-cert-hash)"
}

validate() {
  [[ "$ENDPOINT" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}:[0-9]+$ ]] || die "CONTROL_PLANE_ENDPOINT must be ip:port (got '$ENDPOINT')"
  [[ "$NODE_NAME" =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]] || die "NODE_NAME must be a DNS label (got '$NODE_NAME')"
  [[ "$VERSION" =~ ^1\.[0-9]+\.[0-9]+$ ]] || die "KUBERNETES_VERSION must look like 1.34.2 (got '$VERSION')"
  [[ "$IMAGE_REPOSITORY" =~ ^[a-z0-9][a-z0-9.:/_-]*$ ]] || die "IMAGE_REPOSITORY must be a registry path (got '$IMAGE_REPOSITORY')"
}

write_join_config() { # 0600 from the start (umask), on tmpfs, removed by the EXIT trap
  local api=kubeadm.k8s.io/v1beta3 minor="${VERSION#1.}"
  if ((${minor%%.*} >= 31)); then api=kubeadm.k8s.io/v1beta4; fi
  mkdir -p "$RUN_DIR"
  JOIN_CONFIG=$(umask 077 && mktemp "$RUN_DIR/join.XXXXXX")
  cat >"$JOIN_CONFIG" <<YAML
apiVersion: $api
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: "$ENDPOINT"
    token: "$TOKEN"
    caCertHashes:
      - "$CA_HASH"
nodeRegistration:
  name: "$NODE_NAME"
  criSocket: "$CRI_SOCKET"
YAML
}

joined_here() { # whether the node is joined, and to the cluster whose CA hash is on stdin
  [[ -f "$KUBELET_CONF" ]] || return 1
  local node_ca
  node_ca=$(ca_public_key_hash "$NODE_CA") || node_ca="(unreadable)"
  if [[ "$node_ca" == "$CA_HASH" ]]; then
    return 0
  fi
  log "node is joined to another cluster (its CA is not this control plane's: the control plane was rebuilt): leaving it"
  leave_old_cluster
  return 1
}

leave_old_cluster() {
  local dir link
  kubeadm reset -f --cri-socket "$CRI_SOCKET" >&2 ||
    die "kubeadm reset -f failed: see its output above; run it on the node, then pulumi up again"
  for dir in "${CNI_DIRS[@]}"; do rm -rf "$dir"; done
  for link in "${CNI_LINKS[@]}"; do
    if ip link show "$link" >/dev/null 2>&1; then
      ip link delete "$link" >&2 || warn "could not delete interface $link"
    fi
  done
}

join_cluster() {
  if joined_here; then
    log "node already joined to this cluster (/etc/kubernetes/kubelet.conf, same CA), skipping kubeadm join"
    return 0
  fi
  write_join_config
  log "kubeadm join $ENDPOINT as $NODE_NAME"
  local out rc=0
  out=$(kubeadm join --config "$JOIN_CONFIG" 2>&1) || rc=$?
  out="${out//$TOKEN/<token>}"
  printf '%s\n' "${out//${TOKEN#*.}/<secret>}" >&2
  if ((rc != 0)); then
    # Undo the half-done join so that the next `pulumi up` starts from a clean node.
    kubeadm reset -f --cri-socket "$CRI_SOCKET" >&2 || warn "kubeadm reset -f failed too: run it on the node by hand"
    die "kubeadm join failed (exit $rc): see its output above; check that port 6443 of $ENDPOINT is reachable and that the join token is live (it lives 2 h from this node's join-token step; if that is longer ago, run make rejoin NODE=$NODE_NAME); the node was reset, so run pulumi up again"
  fi
}

main() {
  track_time
  trap 'cleanup; report_time' EXIT
  validate
  read_secrets
  align_sandbox_image "$IMAGE_REPOSITORY" "$VERSION" "$CONTAINERD_CONFIG"
  join_cluster
}

main "$@"
