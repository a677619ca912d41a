#!/usr/bin/env bash
# 35-image-clean.sh: make a bake builder's disk an image that boots as a new machine.
#
# Runs on: the throwaway bake builder only (gpu-k8s:nodeImage bake), as root, after the node
# steps 00-30 and 25 (never 40/50: it never joins a cluster). Nothing may stop, start or
# reboot the builder afterwards: Aliyun fails an image whose instance changes state.
# Inputs (environment): none.
# Knobs: LOCK_WAIT_SECONDS (dpkg lock, default 600); GPU_K8S_ROOT (path prefix, tests only).
# stdin: not read.
# stdout: one JSON object, what the image holds (also written to /etc/gpu-k8s/image.json):
#   {"driver": "535.129.03", "containerToolkit": "1.17.8", "containerd": "1.7.28",
#    "kubelet": "v1.34.2", "images": ["docker.io/flannel/flannel:v0.26.7", ...], "rebootRequired": false}
# Removes (what is this machine's, not the image's): cloud-init's instance state and logs,
# the machine id (an empty /etc/machine-id: systemd makes a new one at first boot), SSH host
# keys and authorized_keys (cloud-init writes the new instance's), shell history, journals,
# DHCP leases, the driver installer cache, apt's package cache; any Kubernetes state (none
# is expected), the builder's log contents and a GRID licence token. Keeps what the image is for: the driver and its DKMS tree, the toolkit,
# containerd's config and pulled images, the apt sources and pins, kernel modules settings.
set -euo pipefail

readonly STEP="35-image-clean"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly MANIFEST="$ROOT/etc/gpu-k8s/image.json"
readonly LOCK_WAIT_SECONDS="${LOCK_WAIT_SECONDS:-600}"
REBOOT_REQUIRED=false
# kubeadm's files (kubeadm reset's list) and flannel's: none may reach an image.
readonly KUBE_STATE=(
  etc/kubernetes/admin.conf etc/kubernetes/kubelet.conf etc/kubernetes/bootstrap-kubelet.conf
  etc/kubernetes/controller-manager.conf etc/kubernetes/scheduler.conf etc/kubernetes/super-admin.conf
  etc/kubernetes/pki var/lib/etcd root/.kube var/lib/cni run/flannel
)

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

# Nothing may write to the disk while it is imaged: apt's timers and unattended-upgrades stop
# for the rest of the builder's life (they stay enabled in the image: 00-wait-boot copes).
quiesce_apt() {
  systemctl stop apt-daily.timer apt-daily-upgrade.timer unattended-upgrades >&2 2>/dev/null || true
  # Without fuser nothing here could tell a held lock from a free one: refuse rather than guess.
  command -v fuser >/dev/null 2>&1 || die "fuser not found (package psmisc): cannot tell whether apt is still running; nothing is imaged"
  local waited=0
  # The locks 00-wait-boot waits for: dpkg's, and apt's lists and archives.
  while fuser "$ROOT/var/lib/dpkg/lock-frontend" "$ROOT/var/lib/dpkg/lock" "$ROOT/var/lib/apt/lists/lock" \
    "$ROOT/var/cache/apt/archives/lock" >/dev/null 2>&1; do
    ((waited < LOCK_WAIT_SECONDS)) || die "dpkg is still locked after ${LOCK_WAIT_SECONDS}s: an apt run did not end; nothing is imaged"
    sleep 5
    waited=$((waited + 5))
  done
  local broken
  broken=$(dpkg --audit 2>/dev/null) || true
  [[ -z "$broken" ]] || die "dpkg --audit reports half-installed packages; nothing is imaged: $(head -n 3 <<<"$broken" | tr '\n' ' ')"
}

check_driver() {
  if ! nvidia-smi >/dev/null 2>&1; then
    die "nvidia-smi fails on the builder: the driver steps did not leave a working driver; nothing is imaged"
  fi
  # A kernel or library update during the bake: a copy boots the new kernel, for which the driver
  # may have no module; 11 on each node then installs it again (slower, not broken). Recorded.
  if [[ -e "$ROOT/var/run/reboot-required" ]]; then
    REBOOT_REQUIRED=true
    warn "a reboot is pending (an update during the bake): nodes from this image run 11-nvidia-driver in full if the driver does not load"
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
    "$(version_of kubelet --version)" "$images" "$REBOOT_REQUIRED" <<'PY'
import json, sys
path, driver, toolkit, containerd, kubelet, images, reboot = sys.argv[1:8]
doc = {"driver": driver, "containerToolkit": toolkit, "containerd": containerd, "kubelet": kubelet,
       "images": [i for i in images.splitlines() if i], "rebootRequired": reboot == "true"}
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
  rm -f "$ROOT"/var/cache/gpu-k8s/*.run "$ROOT"/var/cache/gpu-k8s/*.run.out
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
  # A GRID guest's licence token (the plugin's licensing): each copy licenses itself again.
  rm -f "$ROOT"/etc/nvidia/ClientConfigToken/*.tok
  # The builder's own logs (its hostname, addresses): emptied, the files kept for their owners.
  local log
  shopt -s globstar nullglob
  for log in "$ROOT"/var/log/**/*.log "$ROOT"/var/log/{syslog,messages,wtmp,btmp,lastlog}; do
    if [[ -f "$log" ]]; then : >"$log"; fi
  done
  shopt -u globstar nullglob
  journalctl --rotate >&2 2>/dev/null || true
  journalctl --vacuum-time=1s >&2 2>/dev/null || true
  log "machine id, SSH host keys, authorized keys, cloud-init state and logs removed"
}

main() {
  check_driver
  quiesce_apt
  write_manifest
  stop_kubelet
  remove_kube_state
  remove_caches
  remove_identity
  sync
}

main "$@"
