#!/usr/bin/env bash
# 70-gpu-allocatable.sh: wait until every GPU node advertises nvidia.com/gpu, or say why not.
#
# Runs on: the kubeadm control-plane node, as root, after the device plugin is deployed
# (kubeconfig /etc/kubernetes/admin.conf); or on the deployer with KUBECONFIG set, through
# local/with-kubeconfig.sh (a managed control plane such as ACK: no SSH to any node).
# Inputs (environment), exactly one of GPU_NODES / GPU_NODE_GROUPS:
#   GPU_NODES         space-separated node names (known before deploy: kubeadm)
#   GPU_NODE_GROUPS   space-separated <label-key>=<label-value>:<count>, e.g.
#                     "gpu-k8s/pool=train:2 gpu-k8s/pool=infer:4": a group is ready when at
#                     least <count> nodes with that label advertise enough GPUs (node names
#                     are unknown before deploy: a node pool names its nodes)
#   TIMEOUT_SECONDS   how long to wait in all, e.g. 300
#   PLUGIN_NAMESPACE  the device plugin's namespace, e.g. kube-system
#   PLUGIN_SELECTOR   its pods' label selector, e.g. name=nvidia-device-plugin-ds
#   MIN_GPUS_PER_NODE the least each node must advertise (default 1; time-slicing with
#                     N replicas advertises every GPU N times, so the caller passes N)
#   NODE_SETUP        who set the nodes up, for the fix hints: gpu-k8s (default: our node
#                     steps) | ack (the node pool's GPU image and ACK's device plugin)
#   GPU_RESOURCE      the extended resource to count (default nvidia.com/gpu; the device
#                     plugin's time-slicing renameByDefault advertises nvidia.com/gpu.shared)
#   KUBECONFIG        when set, the kubeconfig to use; else /etc/kubernetes/admin.conf
# Knobs: POLL_SECONDS (default 5); GPU_K8S_ROOT (path prefix, tests only).
# stdin: not read.
# stdout: on success one JSON object {"<node>": <allocatable GPUs>, ...} (group mode: the
# real names of the nodes counted as ready, e.g. cn-hangzhou.10.0.1.23); nothing on failure.
# On timeout: exit 1; stderr names the cause per node from its plugin pod's status, its
# containers' termination messages (where an NVIDIA hook failure is: the container never
# started, so kubectl logs has nothing) and its log (containerd default runtime, driver not
# loaded, no GPU visible, image pull, no plugin pod) and quotes them; in group mode also
# one line per group that has fewer than <count> labelled nodes.
set -euo pipefail

readonly STEP="70-gpu-allocatable"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly GPU_NODES="${GPU_NODES:-}"
readonly GPU_NODE_GROUPS="${GPU_NODE_GROUPS:-}"
readonly TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-300}"
readonly NAMESPACE="${PLUGIN_NAMESPACE:-kube-system}"
readonly SELECTOR="${PLUGIN_SELECTOR:-name=nvidia-device-plugin-ds}"
readonly MIN_GPUS="${MIN_GPUS_PER_NODE:-1}"
readonly POLL_SECONDS="${POLL_SECONDS:-5}"
readonly NODE_SETUP="${NODE_SETUP:-gpu-k8s}"
readonly KUBECONFIG_GIVEN="${KUBECONFIG:-}"
readonly GPU_RESOURCE="${GPU_RESOURCE:-nvidia.com/gpu}"
[[ "$GPU_RESOURCE" =~ ^nvidia\.com/[a-z0-9.-]+$ ]] || {
  printf '[%s] GPU_RESOURCE %s: expected nvidia.com/<name>\n' "$STEP" "$GPU_RESOURCE" >&2
  exit 2
}
# The resource in a jsonpath: its dots escaped (nvidia\.com/gpu\.shared).
readonly RESOURCE_PATH="${GPU_RESOURCE//./\\.}"
readonly POD_FIELDS='{range .items[*]}{.metadata.name}{"\t"}{range .status.containerStatuses[*]}{.state.waiting.reason}{" "}{end}{"\n"}{end}'
readonly TERMINATIONS='{range .status.containerStatuses[*]}{.state.terminated.message}{"\n"}{.lastState.terminated.message}{"\n"}{end}'
# The plugin's own words when containerd's default runtime is not nvidia (so its container
# gets no libnvidia-ml.so.1): v0.20.0 "Failed to initialize NVML: ERROR_LIBRARY_NOT_FOUND"
# and "nvml init failed: ERROR_LIBRARY_NOT_FOUND" (internal/plugin/factory.go:99,
# cmd/nvidia-device-plugin/main.go:199); v0.16-v0.19 "Incompatible strategy detected";
# v0.14-v0.15 "could not load NVML library" / "Incompatible platform detected".
# A node name as the API reports it (RFC 1123 subdomain: ACK's cn-hangzhou.10.0.1.23).
readonly NODE_NAME_RE='^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$'
# <label-key>=<label-value>:<count>; the key may have a DNS prefix (gpu-k8s/pool, ack.aliyun.com/x).
readonly GROUP_RE='^(([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)=([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?):([1-9][0-9]*)$'
NODE_GPUS='{range .items[*]}{.metadata.name}{"\t"}{.status.allocatable.'"$RESOURCE_PATH"'}{"\n"}{end}'
readonly NODE_GPUS
readonly NO_NVIDIA_RUNTIME_RE='ERROR_LIBRARY_NOT_FOUND|could not load NVML library|Incompatible strategy|Incompatible platform detected'
declare -A COUNTS=() LAST=() GROUP_READY=() GROUP_NODES=() GROUP_ERR=()
ORDER="" # the nodes counted, in the order they became ready (group mode)

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

# hint <topic>: what to check, in the words of whoever set the nodes up (NODE_SETUP). On ACK
# the node pool's GPU image brings the driver (the version from the pool's
# ack.aliyun.com/nvidia-driver-version label) and the nvidia runtime; ACK deploys the
# device plugin. Our step numbers mean nothing there.
hint() {
  if [[ "$NODE_SETUP" == ack ]]; then
    case "$1" in
      driver) printf "check the node pool's GPU image and its ack.aliyun.com/nvidia-driver-version label, nvidia-smi on the node" ;;
      runtime) printf "the node pool's image is not ACK's GPU image (which sets the nvidia runtime)" ;;
      pull) printf "check the node's internet access (gpu-k8s gives pool nodes public IPs, no NAT)" ;;
      nodevice) printf "the node pool's GPU image and ack.aliyun.com/nvidia-driver-version label" ;;
      noplugin) printf "ACK's device plugin: is the pool's image ACK's GPU image?" ;;
      join) printf "see the node pool's scaling activities in the ACK console" ;;
    esac
    return 0
  fi
  case "$1" in
    driver) printf "see 12-gpu-verify, nvidia-smi and 'dmesg | grep -i nvrm' there" ;;
    runtime) printf "check default_runtime_name in /etc/containerd/config.toml (20-container-runtime)" ;;
    pull) printf "set gpu-k8s:registryMirrors" ;;
    nodevice) printf "12-gpu-verify" ;;
    noplugin) printf "taints/nodeSelector" ;;
    join) printf "see the node's 50-kubeadm-join step" ;;
  esac
}

allocatable() { timeout 20 kubectl get node "$1" -o jsonpath="{.status.allocatable.$RESOURCE_PATH}" 2>/dev/null || true; }

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
        log "$node: $count allocatable $GPU_RESOURCE"
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
    printf 'node %s has %s allocatable %s (need %s) after %ss: no device plugin pod on the node (%s)%s\n' \
      "$node" "${have:-no}" "$GPU_RESOURCE" "$MIN_GPUS" "$TIMEOUT_SECONDS" "$(hint noplugin)" "${pods:+ [kubectl: $pods]}"
    return 0
  fi
  reasons=$(head -n 1 <<<"$pods" | cut -f2-)
  logs=$(timeout 20 kubectl logs -n "$NAMESPACE" "$pod" --tail=20 2>&1) || true
  if [[ -z "$logs" || "$logs" == *"waiting to start"* ]]; then
    logs+=$(timeout 20 kubectl logs -n "$NAMESPACE" "$pod" --tail=20 --previous 2>&1) || true
  fi
  ended=$(timeout 20 kubectl get pod -n "$NAMESPACE" "$pod" -o jsonpath="$TERMINATIONS" 2>/dev/null | grep -v '^[[:space:]]*$' | sort -u) || true
  if [[ "$ended $logs" == *"driver not loaded"* || "$logs" == *ERROR_DRIVER_NOT_LOADED* ]]; then
    cause="the NVIDIA kernel driver is not loaded on the node: $(hint driver)"
  elif [[ "$reasons $logs" =~ $NO_NVIDIA_RUNTIME_RE ]]; then
    cause="containerd's default runtime is not nvidia (NVIDIA Container Toolkit not configured): $(hint runtime)"
  elif [[ "$reasons $ended $logs" == *ErrImagePull* || "$reasons $ended $logs" == *ImagePullBackOff* ]]; then
    cause="cannot pull the device plugin image: $(hint pull)"
  elif [[ "$logs" == *"No devices found"* ]]; then
    cause="no GPU visible: check the driver (nvidia-smi) on the node ($(hint nodevice))"
  elif [[ "$have" =~ ^[1-9] ]]; then
    cause="the device plugin advertises $have, not $MIN_GPUS: its time-slicing config is not applied"
  else
    cause="the device plugin pod $pod (${reasons:-running}) has not registered a GPU: see its log"
  fi
  printf 'node %s has %s allocatable %s (need %s) after %ss: %s\n' "$node" "${have:-no}" "$GPU_RESOURCE" "$MIN_GPUS" "$TIMEOUT_SECONDS" "$cause"
  [[ -z "$ended" ]] || printf 'container termination message of %s/%s:\n%s\n' "$NAMESPACE" "$pod" "$ended"
  printf 'last log lines of %s/%s:\n%s\n' "$NAMESPACE" "$pod" "${logs:-<empty>}"
}

# whether an allocatable count is a number >= MIN_GPUS_PER_NODE
enough() { [[ "$1" =~ ^[0-9]+$ ]] && (($1 >= MIN_GPUS)); }

# --- group mode: one kubectl get nodes -l per group and poll; ready at <count> nodes ---
poll_group() { # <key>=<value>:<count>
  local group="$1" selector="${1%:*}" want="${1##*:}" out name count seen="" ready=0
  if out=$(timeout 20 kubectl get nodes -l "$selector" -o jsonpath="$NODE_GPUS" 2>&1); then
    GROUP_ERR[$group]=""
  else
    GROUP_ERR[$group]=$(head -n 1 <<<"$out")
    out=""
  fi
  while IFS=$'\t' read -r name count; do
    [[ "$name" =~ $NODE_NAME_RE ]] || continue
    seen+="$name "
    LAST[$name]=$count
    if enough "$count"; then ready=$((ready + 1)); fi
  done <<<"$out"
  GROUP_NODES[$group]=$seen
  ((ready >= want)) || return 1
  GROUP_READY[$group]=1
  for name in $seen; do
    count=${LAST[$name]}
    if ! enough "$count" || [[ -n "${COUNTS[$name]:-}" ]]; then continue; fi
    COUNTS[$name]=$count
    ORDER+="$name "
    log "$name ($selector): $count allocatable $GPU_RESOURCE"
  done
  return 0
}

wait_groups() {
  local deadline=$((SECONDS + TIMEOUT_SECONDS)) group missing
  while :; do
    missing=0
    for group in $GPU_NODE_GROUPS; do
      [[ -n "${GROUP_READY[$group]:-}" ]] && continue
      poll_group "$group" || missing=$((missing + 1))
    done
    ((missing == 0)) && return 0
    ((SECONDS < deadline)) || return 1
    sleep "$POLL_SECONDS"
  done
}

# --- group mode on timeout: too few labelled nodes, then each labelled node short of GPUs ---
report_group() {
  local group="$1" selector="${1%:*}" want="${1##*:}" nodes node have err="${GROUP_ERR[$1]:-}"
  nodes=${GROUP_NODES[$group]:-}
  have=$(wc -w <<<"$nodes")
  if ((have < want)); then
    log "ERROR: $selector: $have of $want nodes registered after ${TIMEOUT_SECONDS}s: the node pool is still scaling out or a node failed to join ($(hint join))${err:+ [kubectl: $err]}"
  fi
  for node in $nodes; do
    enough "${LAST[$node]:-}" || log "ERROR: $(diagnose "$node")"
  done
}

print_json() {
  local node sep="" json="{"
  for node in ${GPU_NODE_GROUPS:+$ORDER}${GPU_NODES}; do
    json+="$sep\"$node\": ${COUNTS[$node]}"
    sep=", "
  done
  printf '%s}\n' "$json"
}

check_targets() {
  local group
  if [[ -n "${GPU_NODE_GROUPS// /}" ]]; then
    [[ -z "${GPU_NODES// /}" ]] || die "GPU_NODES and GPU_NODE_GROUPS are both set: pass exactly one"
    for group in $GPU_NODE_GROUPS; do
      [[ "$group" =~ $GROUP_RE ]] ||
        die "GPU_NODE_GROUPS must be space-separated <label-key>=<label-value>:<count>, e.g. gpu-k8s/pool=train:2 (got '$group')"
    done
    return 0
  fi
  [[ -n "${GPU_NODES// /}" ]] || die "GPU_NODES is empty (and GPU_NODE_GROUPS is not set): name the GPU nodes to wait for"
  [[ "$GPU_NODES" =~ ^[a-z0-9\ -]+$ ]] || die "GPU_NODES must be space-separated node names (got '$GPU_NODES')"
}

# --- the kubeconfig: $KUBECONFIG when given (the deployer), else the control plane's admin.conf ---
use_kubeconfig() {
  if [[ -n "$KUBECONFIG_GIVEN" ]]; then
    [[ -f "$KUBECONFIG_GIVEN" ]] || die "KUBECONFIG=$KUBECONFIG_GIVEN: no such file"
    export KUBECONFIG="$KUBECONFIG_GIVEN"
    return 0
  fi
  export KUBECONFIG="$ROOT/etc/kubernetes/admin.conf"
  [[ -f "$KUBECONFIG" ]] || die "/etc/kubernetes/admin.conf not found: run this on the initialised control plane (or set KUBECONFIG)"
}

main() {
  check_targets
  [[ "$TIMEOUT_SECONDS" =~ ^[0-9]+$ ]] || die "TIMEOUT_SECONDS must be a number (got '$TIMEOUT_SECONDS')"
  [[ "$MIN_GPUS" =~ ^[1-9][0-9]*$ ]] || die "MIN_GPUS_PER_NODE must be a positive number (got '$MIN_GPUS')"
  [[ "$NODE_SETUP" == gpu-k8s || "$NODE_SETUP" == ack ]] || die "NODE_SETUP must be gpu-k8s or ack (got '$NODE_SETUP')"
  use_kubeconfig
  local node group
  if [[ -n "${GPU_NODE_GROUPS// /}" ]]; then
    if wait_groups; then
      print_json
      return 0
    fi
    for group in $GPU_NODE_GROUPS; do
      [[ -n "${GROUP_READY[$group]:-}" ]] || report_group "$group"
    done
    exit 1
  fi
  if wait_all; then
    print_json
    return 0
  fi
  for node in $GPU_NODES; do
    [[ -n "${COUNTS[$node]:-}" ]] || log "ERROR: $(diagnose "$node")"
  done
  exit 1
}

main "$@"
