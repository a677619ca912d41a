#!/usr/bin/env bash
# 41-kubeconfig.sh: print the cluster's admin kubeconfig, pointed at the public IP.
#
# Runs on: the control-plane node, as root, after 40-kubeadm-init.
# Inputs (environment):
#   API_SERVER_IP  the control plane's public IP (a SAN of the API server certificate)
# Knobs: GPU_K8S_ROOT (path prefix, tests only).
# stdin: not read.
# stdout: /etc/kubernetes/admin.conf with every `server:` set to https://API_SERVER_IP:6443.
#   Nothing else on stdout or stderr on success (the caller treats stdout as a secret).
set -euo pipefail

readonly STEP="41-kubeconfig"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly API_SERVER_IP="${API_SERVER_IP:-}"
readonly ADMIN_CONF="$ROOT/etc/kubernetes/admin.conf"

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

print_kubeconfig() {
  [[ -r "$ADMIN_CONF" ]] || die "/etc/kubernetes/admin.conf not found: 40-kubeadm-init has not initialised the cluster"
  grep -Eq '^[[:space:]]*server:' "$ADMIN_CONF" || die "/etc/kubernetes/admin.conf has no server: line"
  sed -E "s#^([[:space:]]*server:[[:space:]]*).*#\1https://${API_SERVER_IP}:6443#" "$ADMIN_CONF"
}

main() {
  [[ "$API_SERVER_IP" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]] || die "API_SERVER_IP must be an IPv4 address (got '$API_SERVER_IP')"
  print_kubeconfig
}

main "$@"
