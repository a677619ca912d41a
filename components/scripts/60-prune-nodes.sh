#!/usr/bin/env bash
# 60-prune-nodes.sh: drain and delete GPU nodes the stack no longer has (scale-down).
#
# Runs on: the control-plane node, as root, after the workers' 50-kubeadm-join.
# Inputs (environment):
#   DESIRED_NODES  space-separated node names that should stay
#   DRAIN_TIMEOUT  seconds a drain may take, e.g. 120 (a failed drain only warns)
# Knobs: GPU_K8S_ROOT (path prefix, tests only).
# stdin: not read.
# stdout: the names of the nodes pruned, one per line (nothing when none).
#
# Only nodes labelled gpu-k8s/pool are candidates, and never a control-plane node.
set -euo pipefail

readonly STEP="60-prune-nodes"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly DESIRED_NODES="${DESIRED_NODES:-}"
readonly DRAIN_TIMEOUT="${DRAIN_TIMEOUT:-120}"
readonly SELECTOR='gpu-k8s/pool,!node-role.kubernetes.io/control-plane'

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

is_desired() {
  local name
  for name in $DESIRED_NODES; do
    [[ "$name" == "$1" ]] && return 0
  done
  return 1
}

prune() {
  log "draining $1 (up to ${DRAIN_TIMEOUT}s)"
  timeout "$((DRAIN_TIMEOUT + 30))" kubectl drain "$1" --ignore-daemonsets --delete-emptydir-data --force \
    --timeout="${DRAIN_TIMEOUT}s" >&2 || warn "draining $1 failed or timed out; deleting it anyway"
  timeout 60 kubectl delete node "$1" --wait=false >&2 ||
    die "kubectl delete node $1 failed: delete it by hand (kubectl delete node $1)"
  log "deleted node $1"
  printf '%s\n' "$1"
}

main() {
  [[ "$DRAIN_TIMEOUT" =~ ^[0-9]+$ ]] || die "DRAIN_TIMEOUT must be a number of seconds (got '$DRAIN_TIMEOUT')"
  [[ "$DESIRED_NODES" =~ ^[a-z0-9.\ -]*$ ]] || die "DESIRED_NODES must be space-separated node names (got '$DESIRED_NODES')"
  export KUBECONFIG="$ROOT/etc/kubernetes/admin.conf"
  [[ -f "$KUBECONFIG" ]] || die "/etc/kubernetes/admin.conf not found: run this on the initialised control plane"
  local nodes node pruned=0
  nodes=$(timeout 60 kubectl get nodes -l "$SELECTOR" -o name) ||
    die "kubectl get nodes failed: is the API server up? (kubectl get --raw=/readyz)"
  for node in $nodes; do
    node="${node#node/}"
    if is_desired "$node"; then
      continue
    fi
    prune "$node"
    pruned=$((pruned + 1))
  done
  log "pruned $pruned node(s)"
}

main "$@"
