#!/usr/bin/env bash
# 70-gpu-allocatable.sh: wait until every GPU node advertises nvidia.com/gpu, or say why not.
#
# Runs on: the control-plane node, as root, after the device plugin is deployed.
# Inputs (environment):
#   GPU_NODES         space-separated node names
#   TIMEOUT_SECONDS   how long to wait in all, e.g. 300
#   PLUGIN_NAMESPACE  the device plugin's namespace, e.g. kube-system
#   PLUGIN_SELECTOR   its pods' label selector, e.g. name=nvidia-device-plugin-ds
#   MIN_GPUS_PER_NODE the least each node must advertise (default 1; time-slicing with
#                     N replicas advertises every GPU N times, so the caller passes N)
# Knobs: POLL_SECONDS (default 5); GPU_K8S_ROOT (path prefix, tests only).
# stdin: not read.
# stdout: on success one JSON object {"<node>": <allocatable GPUs>, ...}; nothing on failure.
# On timeout: exit 1; stderr names the cause per node from its plugin pod's status, its
# containers' termination messages (where an NVIDIA hook failure is: the container never
# started, so kubectl logs has nothing) and its log (containerd default runtime, driver not
# loaded, no GPU visible, image pull, no plugin pod) and quotes them.
set -euo pipefail

readonly STEP="70-gpu-allocatable"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly GPU_NODES="${GPU_NODES:-}"
readonly TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-300}"
readonly NAMESPACE="${PLUGIN_NAMESPACE:-kube-system}"
readonly SELECTOR="${PLUGIN_SELECTOR:-name=nvidia-device-plugin-ds}"
readonly MIN_GPUS="${MIN_GPUS_PER_NODE:-1}"
readonly POLL_SECONDS="${POLL_SECONDS:-5}"
readonly POD_FIELDS='{range .items[*]}{.metadata.name}{"\t"}{range .status.containerStatuses[*]}{.state.waiting.reason}{" "}{end}{"\n"}{end}'
readonly TERMINATIONS='{range .status.containerStatuses[*]}{.state.terminated.message}{"\n"}{.lastState.terminated.message}{"\n"}{end}'
# The plugin's own words when containerd's default runtime is not nvidia (so its container
# gets no libnvidia-ml.so.1): v0.20.0 "Failed to initialize NVML: ERROR_LIBRARY_NOT_FOUND"
# and "nvml init failed: ERROR_LIBRARY_NOT_FOUND" (internal/plugin/factory.go:99,
# cmd/nvidia-device-plugin/main.go:199); v0.16-v0.19 "Incompatible strategy detected";
# v0.14-v0.15 "could not load NVML library" / "Incompatible platform detected".
readonly NO_NVIDIA_RUNTIME_RE='ERROR_LIBRARY_NOT_FOUND|could not load NVML library|Incompatible strategy|Incompatible platform detected'
declare -A COUNTS=() LAST=()

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

allocatable() { timeout 20 kubectl get node "$1" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}' 2>/dev/null || true; }

# --- poll every node until each has >= MIN_GPUS allocatable GPUs or time runs out ---
wait_all() {
  local deadline=$((SECONDS + TIMEOUT_SECONDS)) node count missing
  while :; do
    missing=0
    for node in $GPU_NODES; do
      [[ -n "${COUNTS[$node]:-}" ]] && continue
      count=$(allocatable "$node")
      LAST[$node]=$count
      if [[ "$count" =~ ^[0-9]+$ ]] && ((count >= MIN_GPUS)); then
        COUNTS[$node]=$count
        log "$node: $count allocatable nvidia.com/gpu"
      else
        missing=$((missing + 1))
      fi
    done
    ((missing == 0)) && return 0
    ((SECONDS < deadline)) || return 1
    sleep "$POLL_SECONDS"
  done
}

# --- the cause, from the device plugin pod on that node ---
diagnose() {
  local node="$1" pods pod reasons logs ended cause have="${LAST[$1]:-}"
  pods=$(timeout 20 kubectl get pods -n "$NAMESPACE" -l "$SELECTOR" --field-selector "spec.nodeName=$node" -o jsonpath="$POD_FIELDS" 2>&1) || true
  pod=$(head -n 1 <<<"$pods" | cut -f1)
  if [[ -z "$pod" || "$pod" == *" "* ]]; then
    printf 'node %s has %s allocatable nvidia.com/gpu (need %s) after %ss: no device plugin pod on the node (taints/nodeSelector)%s\n' \
      "$node" "${have:-no}" "$MIN_GPUS" "$TIMEOUT_SECONDS" "${pods:+ [kubectl: $pods]}"
    return 0
  fi
  reasons=$(head -n 1 <<<"$pods" | cut -f2-)
  logs=$(timeout 20 kubectl logs -n "$NAMESPACE" "$pod" --tail=20 2>&1) || true
  if [[ -z "$logs" || "$logs" == *"waiting to start"* ]]; then
    logs+=$(timeout 20 kubectl logs -n "$NAMESPACE" "$pod" --tail=20 --previous 2>&1) || true
  fi
  ended=$(timeout 20 kubectl get pod -n "$NAMESPACE" "$pod" -o jsonpath="$TERMINATIONS" 2>/dev/null | grep -v '^[[:space:]]*$' | sort -u) || true
  if [[ "$ended $logs" == *"driver not loaded"* || "$logs" == *ERROR_DRIVER_NOT_LOADED* ]]; then
    cause="the NVIDIA kernel driver is not loaded on the node: see 12-gpu-verify, nvidia-smi and 'dmesg | grep -i nvrm' there"
  elif [[ "$reasons $logs" =~ $NO_NVIDIA_RUNTIME_RE ]]; then
    cause="containerd's default runtime is not nvidia (NVIDIA Container Toolkit not configured): check default_runtime_name in /etc/containerd/config.toml (20-container-runtime)"
  elif [[ "$reasons $ended $logs" == *ErrImagePull* || "$reasons $ended $logs" == *ImagePullBackOff* ]]; then
    cause="cannot pull the device plugin image: set gpu-k8s:registryMirrors"
  elif [[ "$logs" == *"No devices found"* ]]; then
    cause="no GPU visible: check the driver (nvidia-smi) on the node (12-gpu-verify)"
  elif [[ "$have" =~ ^[1-9] ]]; then
    cause="the device plugin advertises $have, not $MIN_GPUS: its time-slicing config is not applied"
  else
    cause="the device plugin pod $pod (${reasons:-running}) has not registered a GPU: see its log"
  fi
  printf 'node %s has %s allocatable nvidia.com/gpu (need %s) after %ss: %s\n' "$node" "${have:-no}" "$MIN_GPUS" "$TIMEOUT_SECONDS" "$cause"
  [[ -z "$ended" ]] || printf 'container termination message of %s/%s:\n%s\n' "$NAMESPACE" "$pod" "$ended"
  printf 'last log lines of %s/%s:\n%s\n' "$NAMESPACE" "$pod" "${logs:-<empty>}"
}

print_json() {
  local node sep="" json="{"
  for node in $GPU_NODES; do
    json+="$sep\"$node\": ${COUNTS[$node]}"
    sep=", "
  done
  printf '%s}\n' "$json"
}

main() {
  [[ -n "${GPU_NODES// /}" ]] || die "GPU_NODES is empty: name the GPU nodes to wait for"
  [[ "$GPU_NODES" =~ ^[a-z0-9\ -]+$ ]] || die "GPU_NODES must be space-separated node names (got '$GPU_NODES')"
  [[ "$TIMEOUT_SECONDS" =~ ^[0-9]+$ ]] || die "TIMEOUT_SECONDS must be a number (got '$TIMEOUT_SECONDS')"
  [[ "$MIN_GPUS" =~ ^[1-9][0-9]*$ ]] || die "MIN_GPUS_PER_NODE must be a positive number (got '$MIN_GPUS')"
  export KUBECONFIG="$ROOT/etc/kubernetes/admin.conf"
  [[ -f "$KUBECONFIG" ]] || die "/etc/kubernetes/admin.conf not found: run this on the initialised control plane"
  if wait_all; then
    print_json
    return 0
  fi
  local node
  for node in $GPU_NODES; do
    [[ -n "${COUNTS[$node]:-}" ]] || log "ERROR: $(diagnose "$node")"
  done
  exit 1
}

main "$@"
