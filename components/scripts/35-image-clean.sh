#!/usr/bin/env bash
# 35-image-clean.sh: make a bake builder's disk an image that boots as a new machine.
#
# Runs on: the throwaway bake builder only (gpu-k8s:nodeImage bake), as root, after the node
# steps 00-30 and 25 (never 40/50: it never joins a cluster). Nothing may stop, start or
# reboot the builder afterwards: Aliyun fails an image whose instance changes state.
# Inputs (environment): none.
# Knobs: GPU_K8S_ROOT (path prefix, tests only).
# stdin: not read.
# stdout: one JSON object, what the image holds (also written to /etc/gpu-k8s/image.json):
#   {"driver": "535.129.03", "containerToolkit": "1.17.8", "containerd": "1.7.28",
#    "kubelet": "v1.34.2", "images": ["docker.io/flannel/flannel:v0.26.7", ...]}
# Removes (what is this machine's, not the image's): cloud-init's instance state and logs,
# the machine id (an empty /etc/machine-id: systemd makes a new one at first boot), SSH host
# keys and authorized_keys (cloud-init writes the new instance's), shell history, journals,
# DHCP leases, the driver installer cache, apt's package cache; any Kubernetes state (none
# is expected). Keeps what the image is for: the driver and its DKMS tree, the toolkit,
# containerd's config and pulled images, the apt sources and pins, kernel modules settings.
set -euo pipefail

readonly STEP="35-image-clean"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly MANIFEST="$ROOT/etc/gpu-k8s/image.json"
# kubeadm's files (kubeadm reset's list) and flannel's: none may reach an image.
readonly KUBE_STATE=(
  etc/kubernetes/admin.conf etc/kubernetes/kubelet.conf etc/kubernetes/bootstrap-kubelet.conf
  etc/kubernetes/controller-manager.conf etc/kubernetes/scheduler.conf etc/kubernetes/super-admin.conf
  etc/kubernetes/pki var/lib/etcd root/.kube var/lib/cni run/flannel
)

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

refuse_unsafe_states() {
  [[ ! -e "$ROOT/var/run/reboot-required" ]] ||
    die "a reboot is pending (a kernel or library update during the bake): every copy would boot it unverified; bake again"
  if ! nvidia-smi >/dev/null 2>&1; then
    die "nvidia-smi fails on the builder: the driver steps did not leave a working driver; nothing is imaged"
  fi
}

version_of() { # command args...: the first version number it prints, or "unknown"
  local out
  out=$("$@" 2>/dev/null | grep -oE 'v?[0-9]+\.[0-9]+\.[0-9]+' | head -n 1) || true
  printf '%s' "${out:-unknown}"
}

write_manifest() {
  local driver images
  driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' ') || true
  images=$(ctr -n k8s.io images ls -q 2>/dev/null | grep -v '^sha256:' | sort -u) || true
  mkdir -p "$(dirname "$MANIFEST")"
  python3 - "$MANIFEST" "${driver:-unknown}" "$(version_of nvidia-ctk --version)" "$(version_of containerd --version)" \
    "$(version_of kubelet --version)" "$images" <<'PY'
import json, sys
path, driver, toolkit, containerd, kubelet, images = sys.argv[1:7]
doc = {"driver": driver, "containerToolkit": toolkit, "containerd": containerd, "kubelet": kubelet,
       "images": [i for i in images.splitlines() if i]}
with open(path, "w") as f:
    json.dump(doc, f, sort_keys=True)
    f.write("\n")
print(json.dumps(doc, sort_keys=True))
PY
}

stop_kubelet() { # it crash-loops without a config after step 30; it stays enabled for the nodes
  if systemctl is-active --quiet kubelet 2>/dev/null; then
    systemctl stop kubelet >&2 || die "systemctl stop kubelet failed"
  fi
}

remove_kube_state() {
  local path
  for path in "${KUBE_STATE[@]}"; do
    if [[ -e "$ROOT/$path" ]]; then
      rm -rf "${ROOT:?}/$path"
      log "removed /$path"
    fi
  done
  rm -f "$ROOT"/etc/cni/net.d/*flannel* "$ROOT"/etc/kubernetes/manifests/*.yaml
}

remove_caches() {
  rm -f "$ROOT"/var/cache/gpu-k8s/*.run
  apt-get clean >&2 || warn "apt-get clean failed; the image keeps apt's package cache"
}

remove_identity() {
  if cloud-init clean --help 2>/dev/null | grep -q -- '--machine-id'; then
    cloud-init clean --logs --machine-id >&2 || die "cloud-init clean failed"
  else
    cloud-init clean --logs >&2 || die "cloud-init clean failed"
  fi
  # Empty, not absent: systemd writes a new id at first boot (machine-id(5)).
  : >"$ROOT/etc/machine-id"
  if [[ -f "$ROOT/var/lib/dbus/machine-id" && ! -L "$ROOT/var/lib/dbus/machine-id" ]]; then
    rm -f "$ROOT/var/lib/dbus/machine-id"
  fi
  rm -f "$ROOT"/etc/ssh/ssh_host_* "$ROOT/root/.ssh/authorized_keys" "$ROOT/root/.bash_history"
  rm -f "$ROOT"/var/lib/dhcp/*.leases
  journalctl --rotate >&2 2>/dev/null || true
  journalctl --vacuum-time=1s >&2 2>/dev/null || true
  log "machine id, SSH host keys, authorized keys, cloud-init state and logs removed"
}

main() {
  refuse_unsafe_states
  write_manifest
  stop_kubelet
  remove_kube_state
  remove_caches
  remove_identity
  sync
}

main "$@"
