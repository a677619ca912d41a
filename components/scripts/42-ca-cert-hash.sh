#!/usr/bin/env bash
# 42-ca-cert-hash.sh: the cluster CA's public-key hash that workers pin when they join.
#
# Runs on: the control-plane node, as root, after 40-kubeadm-init.
# Inputs (environment): none.
# Knobs: GPU_K8S_ROOT (path prefix, tests only).
# stdin: not read.
# stdout: one line, sha256:<64 hex digits> (kubeadm's --discovery-token-ca-cert-hash).
#
# The hash is SHA-256 over the DER SubjectPublicKeyInfo of the CA key, as kubeadm
# documents (lib/common.sh ca_public_key_hash; 50-kubeadm-join compares a joined worker's CA
# with it).
set -euo pipefail

readonly STEP="42-ca-cert-hash"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly CA_CERT="$ROOT/etc/kubernetes/pki/ca.crt"

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

ca_hash() {
  [[ -r "$CA_CERT" ]] || die "/etc/kubernetes/pki/ca.crt not found: 40-kubeadm-init has not initialised the cluster"
  ca_public_key_hash "$CA_CERT" || die "openssl could not read the CA public key from /etc/kubernetes/pki/ca.crt"
}

main() {
  ca_hash
}

main "$@"
