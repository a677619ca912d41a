#!/usr/bin/env bash
# 43-join-token.sh: make sure the bootstrap token that workers join with exists.
#
# Runs on: the control-plane node, as root, after 40-kubeadm-init.
# Inputs (environment): none read. (The caller passes FOR_NODE, the worker this token is
#   for, so the plan shows it; each worker gets its own token; the script ignores it.)
# Knobs: GPU_K8S_ROOT (path prefix, tests only).
# stdin: one line, the bootstrap token [a-z0-9]{6}.[a-z0-9]{16}. Secret: never printed
#   or logged (it is on kubeadm's argv on this node for a moment: local and root-only).
# stdout: nothing.
set -euo pipefail

readonly STEP="43-join-token"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly ADMIN_CONF="$ROOT/etc/kubernetes/admin.conf"
readonly TTL=2h
TOKEN=""

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

read_token() {
  if [[ ! -t 0 ]]; then
    IFS= read -r TOKEN || true
  fi
  TOKEN="${TOKEN%$'\r'}"
  [[ "$TOKEN" =~ ^[a-z0-9]{6}\.[a-z0-9]{16}$ ]] ||
    die "the bootstrap token on stdin is malformed (not shown): expected [a-z0-9]{6}.[a-z0-9]{16} on the first line"
}

# --- kubeadm output may contain the token: replace it before it reaches a log ---
redacted() {
  local text="$1"
  text="${text//$TOKEN/<token>}"
  printf '%s\n' "${text//${TOKEN#*.}/<secret>}"
}

ensure_token() {
  local id="${TOKEN%%.*}" listed ids out
  [[ -f "$ADMIN_CONF" ]] || die "/etc/kubernetes/admin.conf not found: 40-kubeadm-init has not initialised the cluster"
  listed=$(kubeadm token list --kubeconfig "$ADMIN_CONF" 2>&1) ||
    die "kubeadm token list failed: $(redacted "$listed")"
  ids=$(awk '{print $1}' <<<"$listed" | cut -d. -f1)
  if grep -qx "$id" <<<"$ids"; then
    log "bootstrap token $id already exists, skipping"
    return 0
  fi
  out=$(kubeadm token create "$TOKEN" --ttl "$TTL" --description "gpu-k8s worker join" --kubeconfig "$ADMIN_CONF" 2>&1) ||
    die "kubeadm token create failed: $(redacted "$out")"
  log "created bootstrap token $id (valid for $TTL)"
}

main() {
  read_token
  ensure_token
}

main "$@"
